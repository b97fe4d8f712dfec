// Package hostwire is what the control plane and the host agents share on
// the wire between them, so that neither side imports the other: the
// header names, the mapping of the sandbox contract (package sandbox) to
// the hostagent.v1 messages, and the per-sandbox connection pools both the
// control plane's proxy and the agent's sandbox-traffic endpoint use.
//
// It is a leaf on the host side's dependency graph: it imports only the
// generated protocol and packages sandbox and egress.
package hostwire

import (
	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
)

// Sandbox traffic routing headers, the same the E2B SDK sends to its
// sandbox origin, so the control plane can forward a request untouched.
const (
	HeaderSandboxID   = "E2b-Sandbox-Id"
	HeaderSandboxPort = "E2b-Sandbox-Port"
)

// TokenHeader carries the agent's token (agent.Options.Token) on every
// request of the control plane.
const TokenHeader = "Hearth-Agent-Token"

// FieldHeader carries the offending field of an InvalidArgument error so
// the client can rebuild an error that names it.
const FieldHeader = "Hearth-Field"

// ChunkSize bounds each streamed file or output message.
const ChunkSize = 1 << 20

// StateToPB maps a state to its protocol value (unspecified when unknown).
func StateToPB(s sandbox.State) pb.SandboxState {
	switch s {
	case sandbox.StateCreating:
		return pb.SandboxState_SANDBOX_STATE_CREATING
	case sandbox.StateRunning:
		return pb.SandboxState_SANDBOX_STATE_RUNNING
	case sandbox.StatePausing:
		return pb.SandboxState_SANDBOX_STATE_PAUSING
	case sandbox.StatePaused:
		return pb.SandboxState_SANDBOX_STATE_PAUSED
	case sandbox.StateResuming:
		return pb.SandboxState_SANDBOX_STATE_RESUMING
	case sandbox.StateStopping:
		return pb.SandboxState_SANDBOX_STATE_STOPPING
	case sandbox.StateStopped:
		return pb.SandboxState_SANDBOX_STATE_STOPPED
	case sandbox.StateError:
		return pb.SandboxState_SANDBOX_STATE_ERROR
	}
	return pb.SandboxState_SANDBOX_STATE_UNSPECIFIED
}

// StateFromPB maps a protocol value back; unknown values are "unknown".
func StateFromPB(st pb.SandboxState) sandbox.State {
	for _, s := range sandbox.States() {
		if StateToPB(s) == st {
			return s
		}
	}
	return "unknown"
}

// KindToPB maps a template kind to its protocol value.
func KindToPB(k sandbox.TemplateKind) pb.TemplateKind {
	if k == sandbox.KindSnapshot {
		return pb.TemplateKind_TEMPLATE_KIND_SNAPSHOT
	}
	return pb.TemplateKind_TEMPLATE_KIND_BASE
}

// KindFromPB maps a protocol value back (anything but snapshot is base).
func KindFromPB(k pb.TemplateKind) sandbox.TemplateKind {
	if k == pb.TemplateKind_TEMPLATE_KIND_SNAPSHOT {
		return sandbox.KindSnapshot
	}
	return sandbox.KindBase
}

// RulesToPB maps egress header rules (resolved values) to the wire.
func RulesToPB(rules []egress.HeaderRule) []*pb.EgressHeaderRule {
	var out []*pb.EgressHeaderRule
	for _, r := range rules {
		out = append(out, &pb.EgressHeaderRule{Domain: r.Domain, Headers: r.Headers})
	}
	return out
}

// RulesFromPB is RulesToPB's inverse.
func RulesFromPB(in []*pb.EgressHeaderRule) []egress.HeaderRule {
	var out []egress.HeaderRule
	for _, r := range in {
		out = append(out, egress.HeaderRule{Domain: r.GetDomain(), Headers: r.GetHeaders()})
	}
	return out
}
