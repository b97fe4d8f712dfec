package service

import (
	"context"
	"errors"
	"regexp"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Egress header rules (E2B's network.rules, docs/security.md): the
// create request names team secrets as ${e2b.secrets.NAME} in header
// values; they are filled in here, at create, and go only to the
// sandbox's host, whose egress proxy sets them on the guest's HTTPS
// requests. A secret updated later is not picked up by running sandboxes.

var secretPlaceholderRE = regexp.MustCompile(`\$\{e2b\.secrets\.([^}]*)\}`)

// ruleErr maps an egress rule error to an InvalidArgument of field.
func ruleErr(field string, err error) error {
	var re *egress.RuleError
	if errors.As(err, &re) {
		return InvalidArgument(field, "%q: %s", re.Rule, re.Reason)
	}
	return err
}

// resolveEgressRules validates rules (domains canonical, headers valid)
// and returns a copy with every placeholder replaced by the value of p's
// team's secret; an unknown secret is an InvalidArgument naming it.
func (s *Service) resolveEgressRules(ctx context.Context, p Principal, rules []egress.HeaderRule) ([]egress.HeaderRule, error) {
	const field = "network.rules"
	if err := egress.ValidateRules(rules); err != nil {
		return nil, ruleErr(field, err)
	}
	values := map[string]string{}
	var out []egress.HeaderRule
	for _, r := range rules {
		h := make(map[string]string, len(r.Headers))
		for k, v := range r.Headers {
			var lookupErr error
			h[k] = secretPlaceholderRE.ReplaceAllStringFunc(v, func(m string) string {
				name := strings.ToLower(secretPlaceholderRE.FindStringSubmatch(m)[1])
				if val, ok := values[name]; ok {
					return val
				}
				val, err := s.store.SecretValue(ctx, p.TeamID, name)
				if err != nil && lookupErr == nil {
					lookupErr = err
					if errors.Is(err, store.ErrNotFound) || !secretNameRE.MatchString(name) {
						lookupErr = InvalidArgument(field, "%s header %s: no secret named %q in this team (create it with Secret.create)", r.Domain, k, name)
					}
				}
				values[name] = val
				return val
			})
			if lookupErr != nil {
				return nil, lookupErr
			}
		}
		out = append(out, egress.HeaderRule{Domain: r.Domain, Headers: h})
	}
	if err := egress.ValidateRules(out); err != nil {
		return nil, ruleErr(field, err) // a secret's value with CR or LF
	}
	return out, nil
}
