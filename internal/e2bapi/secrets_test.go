package e2bapi_test

import (
	"net/http"
	"strings"
	"testing"

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

		// A sandbox cannot use a secret through egress transforms yet: 501,
		// naming what is missing.
		body := sdkCreate(nil)
		body["network"] = map[string]any{"rules": map[string]any{"api.openai.com": []any{map[string]any{"transform": map[string]any{"headers": map[string]string{"Authorization": "Bearer ${e2b.secrets.another}"}}}}}}
		r = e.do(http.MethodPost, "/v2/sandboxes", e.key, body)
		if r.status != http.StatusNotImplemented || !strings.Contains(string(r.body), "egress") {
			t.Fatalf("create with egress transforms: %d %s", r.status, r.body)
		}
	})
}
