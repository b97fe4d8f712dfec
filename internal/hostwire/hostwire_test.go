package hostwire

import (
	"reflect"
	"testing"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
)

func TestRulesRoundTrip(t *testing.T) {
	rules := []egress.HeaderRule{
		{Domain: "api.example.com", Headers: map[string]string{"Authorization": "Bearer x"}},
		{Domain: "*.example.org", Headers: map[string]string{"X-A": "1", "X-B": "2"}},
	}
	if got := RulesFromPB(RulesToPB(rules)); !reflect.DeepEqual(got, rules) {
		t.Errorf("round trip: %v, want %v", got, rules)
	}
	if got := RulesFromPB(RulesToPB(nil)); got != nil {
		t.Errorf("no rules → %v", got)
	}
}

// Every state and kind crosses the wire and comes back as itself.
func TestRoundTrip(t *testing.T) {
	seen := map[pb.SandboxState]bool{}
	for _, s := range sandbox.States() {
		p := StateToPB(s)
		if p == pb.SandboxState_SANDBOX_STATE_UNSPECIFIED || seen[p] {
			t.Errorf("state %s → %v (unmapped or shared)", s, p)
		}
		seen[p] = true
		if got := StateFromPB(p); got != s {
			t.Errorf("state %s → %v → %s", s, p, got)
		}
	}
	if got := StateFromPB(pb.SandboxState_SANDBOX_STATE_UNSPECIFIED); got != "unknown" {
		t.Errorf("unspecified → %s", got)
	}
	for _, k := range []sandbox.TemplateKind{sandbox.KindBase, sandbox.KindSnapshot} {
		if got := KindFromPB(KindToPB(k)); got != k {
			t.Errorf("kind %s → %s", k, got)
		}
	}
}
