package egress

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	t.Parallel()
	p, err := New(false, []string{"8.8.8.8", " 1.1.1.0/24", "8.8.8.8/32", "2001:db8::1"}, []string{"0.0.0.0/0"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"8.8.8.8/32", "1.1.1.0/24", "2001:db8::1/128"}; !slices.Equal(p.AllowOut, want) {
		t.Errorf("AllowOut = %v, want %v", p.AllowOut, want)
	}
	if want := []string{"0.0.0.0/0"}; !slices.Equal(p.DenyOut, want) || p.AllowInternet {
		t.Errorf("policy = %+v", p)
	}
}

func TestNewRefusesMalformedRules(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		allow, deny []string
		field, rule string
		reason      string
	}{
		{allow: []string{"example.com"}, field: "allowOut", rule: "example.com", reason: "domain names"},
		{allow: []string{"*.example.com"}, field: "allowOut", rule: "*.example.com", reason: "domain names"},
		{deny: []string{"10.0.0.1/8"}, field: "denyOut", rule: "10.0.0.1/8", reason: "did you mean 10.0.0.0/8"},
		{deny: []string{"1.2.3.4/33"}, field: "denyOut", rule: "1.2.3.4/33", reason: "not a CIDR"},
		{allow: []string{"8.8.8.8", ""}, field: "allowOut", rule: "", reason: "empty"},
		{deny: []string{"not an address!"}, field: "denyOut", rule: "not an address!", reason: "not an IP"},
		{allow: []string{"fe80::1%eth0"}, field: "allowOut", rule: "fe80::1%eth0", reason: "zones"},
	} {
		_, err := New(true, c.allow, c.deny)
		var re *RuleError
		if !errors.As(err, &re) {
			t.Errorf("New(%q, %q) = %v, want a RuleError", c.allow, c.deny, err)
			continue
		}
		if re.Field != c.field || re.Rule != c.rule || !strings.Contains(re.Reason, c.reason) {
			t.Errorf("New(%q, %q) = %+v, want field %s rule %q reason ~%q", c.allow, c.deny, re, c.field, c.rule, c.reason)
		}
		if !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), `"`+c.rule+`"`) {
			t.Errorf("message %q does not name the rule", err)
		}
	}
}

func TestParseOperatorRanges(t *testing.T) {
	t.Parallel()
	got, err := ParseOperatorRanges([]string{"10.1.0.0/16,192.168.5.0/24", "172.16.0.1"})
	if err != nil || len(got) != 3 || got[2].String() != "172.16.0.1/32" {
		t.Fatalf("ParseOperatorRanges = %v, %v", got, err)
	}
	if _, err := ParseOperatorRanges([]string{"lan"}); err == nil || !strings.Contains(err.Error(), "egress-allow-private") {
		t.Fatalf("ParseOperatorRanges(lan) = %v", err)
	}
}
