package api

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// POST /v1/sandboxes egress_rules: secrets filled in for the host only;
// bad rules and unknown secrets are 400s naming them.
func TestCreateEgressRules(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		a := e.signup("egress@example.com")
		k := apiKey(a.key)
		const value = "sk-v1-egress-77"
		if _, err := db.CreateSecret(context.Background(), store.Secret{TeamID: a.teamID, Name: "api-key", Value: value}); err != nil {
			t.Fatal(err)
		}
		rules := []map[string]any{{"domain": "*.example.com", "headers": map[string]string{"Authorization": "Bearer ${e2b.secrets.api-key}"}}}
		r := e.do("POST", "/v1/sandboxes", map[string]any{"template": "base", "egress_rules": rules}, k)
		e.want(r, 201, "create with egress rules")
		if strings.Contains(string(r.body), value) {
			t.Fatalf("the secret in the response: %s", r.body)
		}
		creates := e.host.Creates()
		want := []egress.HeaderRule{{Domain: "*.example.com", Headers: map[string]string{"Authorization": "Bearer " + value}}}
		if got := creates[len(creates)-1].EgressRules; !reflect.DeepEqual(got, want) {
			t.Fatalf("host got %+v, want %+v", got, want)
		}
		for _, c := range []struct {
			name  string
			rules []map[string]any
			msg   string
		}{
			{"unknown secret", []map[string]any{{"domain": "a.example.com", "headers": map[string]string{"A": "${e2b.secrets.nope}"}}}, `no secret named \"nope\"`},
			{"upper case", []map[string]any{{"domain": "A.example.com", "headers": map[string]string{"A": "b"}}}, "A.example.com"},
			{"bare wildcard", []map[string]any{{"domain": "*", "headers": map[string]string{"A": "b"}}}, `\"*\"`},
			{"framing header", []map[string]any{{"domain": "a.example.com", "headers": map[string]string{"Content-Length": "1"}}}, "Content-Length"},
		} {
			r := e.do("POST", "/v1/sandboxes", map[string]any{"template": "base", "egress_rules": c.rules}, k)
			if r.status != 400 || !strings.Contains(string(r.body), c.msg) {
				t.Errorf("%s: %d %s, want 400 mentioning %s", c.name, r.status, r.body, c.msg)
			}
		}
	})
}
