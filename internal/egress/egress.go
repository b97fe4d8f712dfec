// Package egress is the one home of a sandbox's outbound traffic policy:
// its shape, its validation (shared by both REST surfaces, the CLI and the
// agent) and the address ranges closed by default.
//
// Semantics (E2B's): AllowOut entries win over DenyOut entries; with
// AllowInternet false everything not in AllowOut is denied (as DenyOut
// 0.0.0.0/0). Whatever a policy says, the ranges in Closed stay closed
// unless the operator opened them: a user's AllowOut never reaches them.
package egress

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Policy is a sandbox's egress policy. AllowOut and DenyOut hold canonical
// CIDRs (a bare IP becomes /32 or /128).
type Policy struct {
	AllowInternet bool     `json:"allowInternet"`
	AllowOut      []string `json:"allowOut,omitempty"`
	DenyOut       []string `json:"denyOut,omitempty"`
}

// AllTraffic is the E2B SDK's "everything" selector.
const AllTraffic = "0.0.0.0/0"

// RuleError names the rule a policy was refused for.
type RuleError struct {
	Field  string // "allowOut", "denyOut", "egress-allow-private"
	Rule   string
	Reason string
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("%s rule %q: %s", e.Field, e.Rule, e.Reason)
}

// New validates and canonicalises a policy. Domain names are refused:
// hearth enforces egress on addresses only (no SNI / Host matching).
func New(allowInternet bool, allowOut, denyOut []string) (Policy, error) {
	p := Policy{AllowInternet: allowInternet}
	var err error
	if p.AllowOut, err = canon("allowOut", allowOut); err != nil {
		return Policy{}, err
	}
	if p.DenyOut, err = canon("denyOut", denyOut); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Open is the policy of a sandbox with internet access and no rules.
func Open() Policy { return Policy{AllowInternet: true} }

func canon(field string, rules []string) ([]string, error) {
	var out []string
	for _, r := range rules {
		pfx, err := ParsePrefix(r)
		if err != nil {
			return nil, &RuleError{Field: field, Rule: r, Reason: err.Error()}
		}
		if s := pfx.String(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// ParsePrefix reads a CIDR or a bare IP address. The address part must be
// the network address (10.0.0.0/8, not 10.1.2.3/8): a typo is refused
// rather than silently widened.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("empty rule")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not a CIDR (want e.g. 8.8.8.0/24): %w", err)
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("zones are not allowed")
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("host bits set: did you mean %s?", p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		if looksLikeDomain(s) {
			return netip.Prefix{}, fmt.Errorf("domain names are not supported by this server; give IP addresses or CIDRs")
		}
		return netip.Prefix{}, fmt.Errorf("not an IP address or CIDR")
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("zones are not allowed")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func looksLikeDomain(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	return strings.Contains(s, ".") && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) < 0
}

// Prefixes returns the policy's rules as prefixes (a Policy from New always
// parses).
func (p Policy) Prefixes() (allow, deny []netip.Prefix) {
	for _, s := range p.AllowOut {
		if x, err := netip.ParsePrefix(s); err == nil {
			allow = append(allow, x)
		}
	}
	for _, s := range p.DenyOut {
		if x, err := netip.ParsePrefix(s); err == nil {
			deny = append(deny, x)
		}
	}
	return allow, deny
}

// Closed lists the ranges a sandbox never reaches unless the operator opens
// them: private (RFC 1918), shared (RFC 6598, 100.64/10), link-local and
// cloud metadata (169.254/16), loopback, "this network", multicast,
// reserved and broadcast, and the IPv6 counterparts (ULA, link-local,
// loopback, multicast).
func Closed() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("224.0.0.0/4"),
		netip.MustParsePrefix("240.0.0.0/4"), // reserved, includes 255.255.255.255
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("fc00::/7"),
		netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("ff00::/8"),
	}
}

// ParseOperatorRanges reads --egress-allow-private values.
func ParseOperatorRanges(vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range vals {
		for _, f := range strings.Split(v, ",") {
			if strings.TrimSpace(f) == "" {
				continue
			}
			p, err := ParsePrefix(f)
			if err != nil {
				return nil, &RuleError{Field: "egress-allow-private", Rule: f, Reason: err.Error()}
			}
			out = append(out, p)
		}
	}
	return out, nil
}
