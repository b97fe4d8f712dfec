package egress

import "testing"

func TestCanonDomain(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"api.example.com", "api.example.com"},
		{"API.Example.COM.", "api.example.com"},
		{"*.example.com", "*.example.com"},
		{"*", ""},
		{"*.com.*", ""},
		{"a.*.example.com", ""},
		{"**.example.com", ""},
		{"localhost", ""},
		{"1.2.3.4", ""},
		{"bad_label.example.com", ""},
		{"-x.example.com", ""},
		{"", ""},
	} {
		got, err := CanonDomain(c.in)
		if (err == nil) != (c.want != "") || got != c.want {
			t.Errorf("CanonDomain(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestMatchRule(t *testing.T) {
	rules := []HeaderRule{
		{Domain: "api.example.com"},
		{Domain: "*.example.com"},
		{Domain: "*.b.example.com"},
	}
	for _, c := range []struct{ name, want string }{
		{"api.example.com", "api.example.com"},
		{"API.example.com.", "api.example.com"},
		{"x.example.com", "*.example.com"},
		{"x.y.example.com", "*.example.com"},
		{"x.b.example.com", "*.b.example.com"},
		{"b.example.com", "*.example.com"},
		{"example.com", ""},
		{"notexample.com", ""},
		{"", ""},
	} {
		r, ok := MatchRule(rules, c.name)
		if ok != (c.want != "") || r.Domain != c.want {
			t.Errorf("MatchRule(%q) = %q, %v; want %q", c.name, r.Domain, ok, c.want)
		}
	}
}

func TestValidHeader(t *testing.T) {
	for _, c := range []struct {
		name, value string
		ok          bool
	}{
		{"Authorization", "Bearer x", true},
		{"x-api-key", "k", true},
		{"Host", "evil", false},
		{"content-length", "1", false},
		{"Bad Name", "v", false},
		{"X", "a\r\nInjected: 1", false},
		{"", "v", false},
	} {
		if err := ValidHeader("d", c.name, c.value); (err == nil) != c.ok {
			t.Errorf("ValidHeader(%q, %q) = %v, want ok=%v", c.name, c.value, err, c.ok)
		}
	}
}
