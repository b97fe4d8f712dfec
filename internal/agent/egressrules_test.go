package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/egress"
)

// The resolved rules (secrets) are kept for crash recovery readable by
// the agent only, and read back as written; no file means no rules.
func TestEgressRulesFile(t *testing.T) {
	dir := t.TempDir()
	if got, err := readEgressRules(dir); err != nil || got != nil {
		t.Fatalf("no file: %v, %v", got, err)
	}
	rules := []egress.HeaderRule{{Domain: "api.example.com", Headers: map[string]string{"Authorization": "Bearer s"}}}
	if err := writeEgressRules(dir, rules); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, egressRulesFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	if got, err := readEgressRules(dir); err != nil || !reflect.DeepEqual(got, rules) {
		t.Errorf("read back %v, %v", got, err)
	}
}

func TestEgressEnv(t *testing.T) {
	spec := Spec{Env: map[string]string{"A": "1"}}
	if got := egressEnv(spec); !reflect.DeepEqual(got, spec.Env) {
		t.Errorf("without rules: %v", got)
	}
	spec.EgressRules = []egress.HeaderRule{{Domain: "a.example.com", Headers: map[string]string{"X": "y"}}}
	got := egressEnv(spec)
	if got["A"] != "1" || got[nodeExtraCAVar] != guestCAPath || len(spec.Env) != 1 {
		t.Errorf("with rules: %v (spec env %v)", got, spec.Env)
	}
	// The sandbox's own value wins.
	spec.Env = map[string]string{nodeExtraCAVar: "/mine.pem"}
	if got := egressEnv(spec); got[nodeExtraCAVar] != "/mine.pem" {
		t.Errorf("own NODE_EXTRA_CA_CERTS replaced: %v", got)
	}
	// sandbox.json never holds them.
	if b, err := json.Marshal(meta{Spec: spec}); err != nil || strings.Contains(string(b), "a.example.com") {
		t.Errorf("meta JSON holds rules: %s %v", b, err)
	}
}
