package egress

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// HeaderRule is one domain's header transform (E2B's network.rules): the
// host agent's egress proxy sets Headers on every HTTPS request the guest
// sends to a matching server name. Rules do not grant network access: the
// policy still decides where a guest (and the proxy for it) may connect.
type HeaderRule struct {
	// Domain is an exact lower-case DNS name, or "*." and a name: every
	// name below it at any depth, not the name itself.
	Domain  string            `json:"domain"`
	Headers map[string]string `json:"headers"`
}

// Rule limits: a create carries them to the host and into envd.json.
const (
	MaxHeaderRules   = 64
	MaxRuleHeaders   = 32
	maxHeaderValueSz = 8 << 10
)

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CanonDomain validates a rule key and returns it lower-cased.
func CanonDomain(key string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(key, "."))
	name := strings.TrimPrefix(d, "*.")
	if strings.Contains(name, "*") {
		return "", &RuleError{Field: "rules", Rule: key, Reason: `want a DNS name or one leading wildcard label ("*.example.com")`}
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return "", &RuleError{Field: "rules", Rule: key, Reason: "want a DNS name: rules match the TLS server name (SNI), which is never an IP address"}
	}
	labels := strings.Split(name, ".")
	if len(name) > 253 || len(labels) < 2 {
		return "", &RuleError{Field: "rules", Rule: key, Reason: "want a DNS name with at least two labels"}
	}
	for _, l := range labels {
		if !dnsLabelRE.MatchString(l) {
			return "", &RuleError{Field: "rules", Rule: key, Reason: fmt.Sprintf("label %q is not a DNS label", l)}
		}
	}
	return d, nil
}

// ValidHeader checks one header of a transform.
func ValidHeader(domain, name, value string) error {
	bad := func(reason string) error {
		return &RuleError{Field: "rules", Rule: domain + " header " + name, Reason: reason}
	}
	switch {
	case name == "" || strings.IndexFunc(name, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r)
	}) >= 0:
		return bad("not a valid HTTP header name")
	case slices.Contains([]string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Te", "Trailer"}, http.CanonicalHeaderKey(name)):
		return bad("hop-by-hop and framing headers cannot be set")
	case len(value) > maxHeaderValueSz || strings.ContainsAny(value, "\r\n\x00"):
		return bad(fmt.Sprintf("value must be at most %d bytes without CR, LF or NUL", maxHeaderValueSz))
	}
	return nil
}

// ValidateRules checks a rule set as a host receives it (resolved values).
func ValidateRules(rules []HeaderRule) error {
	if len(rules) > MaxHeaderRules {
		return &RuleError{Field: "rules", Rule: fmt.Sprint(len(rules)), Reason: fmt.Sprintf("at most %d domains", MaxHeaderRules)}
	}
	seen := map[string]bool{}
	for _, r := range rules {
		d, err := CanonDomain(r.Domain)
		if err != nil {
			return err
		}
		if d != r.Domain || seen[d] {
			return &RuleError{Field: "rules", Rule: r.Domain, Reason: "domains must be canonical (lower case) and distinct"}
		}
		seen[d] = true
		if len(r.Headers) > MaxRuleHeaders {
			return &RuleError{Field: "rules", Rule: r.Domain, Reason: fmt.Sprintf("at most %d headers", MaxRuleHeaders)}
		}
		for k, v := range r.Headers {
			if err := ValidHeader(r.Domain, k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// MatchRule returns the rule for a TLS server name: an exact domain wins,
// then the longest wildcard suffix; a wildcard never matches its apex.
func MatchRule(rules []HeaderRule, serverName string) (HeaderRule, bool) {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if name == "" {
		return HeaderRule{}, false
	}
	var best HeaderRule
	found := false
	for _, r := range rules {
		if r.Domain == name {
			return r, true
		}
		if suffix, ok := strings.CutPrefix(r.Domain, "*"); ok && strings.HasSuffix(name, suffix) && len(name) > len(suffix) {
			if !found || len(r.Domain) > len(best.Domain) {
				best, found = r, true
			}
		}
	}
	return best, found
}
