package e2bapi_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

type secretInfo struct {
	SecretID       string            `json:"secretID"`
	Name           string            `json:"name"`
	CurrentVersion int64             `json:"currentVersion"`
	Metadata       map[string]string `json:"metadata"`
}

func TestSecrets(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		r := e.do(http.MethodPost, "/secrets", e.key, map[string]any{"name": "OpenAI-Key", "value": "sk-do-not-echo", "metadata": map[string]string{"env": "prod"}})
		if r.status != http.StatusCreated || strings.Contains(string(r.body), "sk-do-not-echo") {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		var s secretInfo
		r.json(t, &s)
		if !strings.HasPrefix(s.SecretID, "sec_") || s.Name != "openai-key" || s.CurrentVersion != 1 || s.Metadata["env"] != "prod" {
			t.Fatalf("created %+v", s)
		}
		for _, key := range []string{s.SecretID, "openai-key", "OpenAI-Key"} {
			r := e.do(http.MethodGet, "/secrets/"+key, e.key, nil)
			var got secretInfo
			r.json(t, &got)
			if r.status != http.StatusOK || got.SecretID != s.SecretID || strings.Contains(string(r.body), "sk-do-not-echo") {
				t.Fatalf("get %s: %d %s", key, r.status, r.body)
			}
		}
		r = e.do(http.MethodPost, "/secrets/"+s.SecretID, e.key, map[string]any{"value": "sk-second"})
		var u secretInfo
		r.json(t, &u)
		if r.status != http.StatusOK || u.CurrentVersion != 2 || u.Metadata["env"] != "prod" || strings.Contains(string(r.body), "sk-second") {
			t.Fatalf("update: %d %s", r.status, r.body)
		}
		e.do(http.MethodPost, "/secrets", e.key, map[string]any{"name": "another", "value": "v"})

		// Paging by one.
		var names []string
		next := ""
		for i := 0; i < 4; i++ {
			r := e.do(http.MethodGet, "/secrets?limit=1&nextToken="+next, e.key, nil)
			var page []secretInfo
			r.json(t, &page)
			for _, p := range page {
				names = append(names, p.Name)
			}
			if next = r.header.Get("X-Next-Token"); next == "" {
				break
			}
		}
		if strings.Join(names, ",") != "another,openai-key" {
			t.Fatalf("paged: %v", names)
		}

		// Team B: empty list, and every route on A's secret is a 404.
		var other []secretInfo
		e.do(http.MethodGet, "/secrets", e.keyB, nil).json(t, &other)
		if len(other) != 0 {
			t.Fatalf("team B lists %+v", other)
		}
		for _, tc := range []struct {
			method string
			body   any
		}{
			{http.MethodGet, nil}, {http.MethodPost, map[string]any{"value": "x"}}, {http.MethodDelete, nil},
		} {
			if r := e.do(tc.method, "/secrets/"+s.SecretID, e.keyB, tc.body); r.status != http.StatusNotFound {
				t.Errorf("team B %s: %d %s", tc.method, r.status, r.body)
			}
		}

		for _, tc := range []struct {
			name string
			body map[string]any
			want int
		}{
			{"bad name", map[string]any{"name": "has space", "value": "v"}, http.StatusBadRequest},
			{"reserved prefix", map[string]any{"name": "sec_x", "value": "v"}, http.StatusBadRequest},
			{"no value", map[string]any{"name": "novalue"}, http.StatusBadRequest},
			{"empty value", map[string]any{"name": "empty", "value": ""}, http.StatusBadRequest},
			{"duplicate (any case)", map[string]any{"name": "ANOTHER", "value": "v"}, http.StatusConflict},
			{"metadata too big", map[string]any{"name": "big", "value": "v", "metadata": map[string]string{"k": strings.Repeat("x", 1025)}}, http.StatusBadRequest},
		} {
			if r := e.do(http.MethodPost, "/secrets", e.key, tc.body); r.status != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.name, r.status, r.body, tc.want)
			}
		}

		if r := e.do(http.MethodDelete, "/secrets/"+s.SecretID, e.key, nil); r.status != http.StatusNoContent {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		if r := e.do(http.MethodGet, "/secrets/"+s.SecretID, e.key, nil); r.status != http.StatusNotFound {
			t.Fatalf("get deleted: %d", r.status)
		}

		// Egress transforms name secrets; the host gets their values, the
		// client never does.
		const value = "sk-egress-4b1d"
		if r := e.do(http.MethodPost, "/secrets", e.key, map[string]any{"name": "Egress-Key", "value": value}); r.status != http.StatusCreated {
			t.Fatalf("create secret: %d %s", r.status, r.body)
		}
		transform := func(h map[string]string) map[string]any {
			return map[string]any{"transform": map[string]any{"headers": h}}
		}
		body := sdkCreate(nil)
		body["network"] = map[string]any{"rules": map[string]any{
			"API.OpenAI.com": []any{
				transform(map[string]string{"authorization": "Bearer old", "X-Org": "o1"}),
				transform(map[string]string{"Authorization": "Bearer ${e2b.secrets.egress-key}"}),
			},
			"*.example.com":          []any{transform(map[string]string{"X-Key": "${e2b.secrets.EGRESS-KEY}:${e2b.secrets.egress-key}"})},
			"no-headers.example.org": []any{map[string]any{}},
		}}
		r = e.do(http.MethodPost, "/v2/sandboxes", e.key, body)
		if r.status != http.StatusCreated || strings.Contains(string(r.body), value) {
			t.Fatalf("create with egress transforms: %d %s", r.status, r.body)
		}
		creates := e.host.Creates()
		got := creates[len(creates)-1].EgressRules
		want := []egress.HeaderRule{
			{Domain: "*.example.com", Headers: map[string]string{"X-Key": value + ":" + value}},
			{Domain: "api.openai.com", Headers: map[string]string{"Authorization": "Bearer " + value, "X-Org": "o1"}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("host got rules %+v, want %+v", got, want)
		}
		var created struct{ SandboxID string }
		_ = json.Unmarshal(r.body, &created)
		if r := e.do(http.MethodGet, "/sandboxes/"+created.SandboxID, e.key, nil); r.status != http.StatusOK || strings.Contains(string(r.body), value) {
			t.Fatalf("getInfo: %d %s (must not show the secret)", r.status, r.body)
		}
		for _, tc := range []struct {
			name  string
			rules map[string]any
			msg   string
		}{
			{"unknown secret", map[string]any{"a.example.com": []any{transform(map[string]string{"A": "${e2b.secrets.nosuch}"})}}, `no secret named \"nosuch\"`},
			{"bare wildcard", map[string]any{"*": []any{transform(map[string]string{"A": "b"})}}, `\"*\"`},
			{"inner wildcard", map[string]any{"a.*.example.com": []any{transform(map[string]string{"A": "b"})}}, "a.*.example.com"},
			{"IP", map[string]any{"10.0.0.1": []any{transform(map[string]string{"A": "b"})}}, "10.0.0.1"},
			{"same domain twice", map[string]any{"a.example.com": []any{}, "A.example.com": []any{}}, "same domain"},
			{"framing header", map[string]any{"a.example.com": []any{transform(map[string]string{"Host": "x"})}}, "header Host"},
			{"not a rule list", map[string]any{"a.example.com": "Bearer x"}, "network.rules"},
		} {
			body := sdkCreate(nil)
			body["network"] = map[string]any{"rules": tc.rules}
			r := e.do(http.MethodPost, "/v2/sandboxes", e.key, body)
			if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), tc.msg) {
				t.Errorf("%s: %d %s, want 400 mentioning %s", tc.name, r.status, r.body, tc.msg)
			}
		}
	})
}
