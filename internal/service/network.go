package service

import (
	"context"
	"errors"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// NetworkInput is a sandbox's egress configuration as a client gives it.
// On update it replaces the whole configuration: an omitted field is
// cleared (AllowInternet nil means the default, true), as E2B does.
type NetworkInput struct {
	AllowInternet *bool
	AllowOut      []string
	DenyOut       []string
}

// policy validates in; a malformed rule is an InvalidArgument naming it.
func (in NetworkInput) policy() (egress.Policy, error) {
	allow := true
	if in.AllowInternet != nil {
		allow = *in.AllowInternet
	}
	p, err := egress.New(allow, in.AllowOut, in.DenyOut)
	var re *egress.RuleError
	if errors.As(err, &re) {
		return egress.Policy{}, InvalidArgument(re.Field, "rule %q: %s", re.Rule, re.Reason)
	}
	return p, err
}

// policyOf is the egress policy a stored sandbox runs with.
func policyOf(sb store.Sandbox) egress.Policy {
	return egress.Policy{AllowInternet: sb.AllowInternet, AllowOut: sb.AllowOut, DenyOut: sb.DenyOut}
}

// UpdateSandboxNetwork replaces the egress policy of the team's sandbox:
// applied at once by its host when running, kept for the next resume when
// paused. Other states are a conflict.
func (s *Service) UpdateSandboxNetwork(ctx context.Context, p Principal, id string, in NetworkInput) (store.Sandbox, error) {
	pol, err := in.policy()
	if err != nil {
		return store.Sandbox{}, err
	}
	sb, err := s.GetSandbox(ctx, p, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	switch sb.Status {
	case sandbox.StateRunning:
		hc, err := s.hosts.Get(ctx, sb.Host)
		if err != nil {
			return store.Sandbox{}, err
		}
		if err := hc.UpdateSandboxNetwork(ctx, sb.ID, pol); err != nil {
			return store.Sandbox{}, hostErrFor("change the sandbox's network", err)
		}
	case sandbox.StatePaused:
	default:
		return store.Sandbox{}, Conflict("sandbox %s is %s; its network can change while it runs or is paused", sb.ID, sb.Status)
	}
	if err := s.store.SetSandboxNetwork(ctx, sb.ID, pol.AllowInternet, pol.AllowOut, pol.DenyOut); err != nil {
		return store.Sandbox{}, fromStore(err, "sandbox", "")
	}
	return s.GetSandbox(ctx, p, id)
}
