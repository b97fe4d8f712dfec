package agentclient

import (
	"context"
	"errors"
	"testing"

	"connectrpc.com/connect"

	"github.com/hearth-sandbox/hearth/internal/hostwire"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// Every RPC error becomes the service error its code means; the agent's
// field header names the field of an invalid argument.
func TestServiceErr(t *testing.T) {
	invalid := connect.NewError(connect.CodeInvalidArgument, errors.New("vcpus: must be between 1 and 64"))
	invalid.Meta().Set(hostwire.FieldHeader, "vcpus")
	for _, tc := range []struct {
		name  string
		err   error
		kind  service.Kind
		field string
	}{
		{"not found", connect.NewError(connect.CodeNotFound, errors.New("no sandbox s1")), service.KindNotFound, ""},
		{"invalid", invalid, service.KindInvalidArgument, "vcpus"},
		{"wrong state", connect.NewError(connect.CodeFailedPrecondition, errors.New("paused")), service.KindConflict, ""},
		{"exists", connect.NewError(connect.CodeAlreadyExists, errors.New("s1")), service.KindConflict, ""},
		{"cannot", connect.NewError(connect.CodeUnimplemented, errors.New("no snapshots")), service.KindUnimplemented, ""},
		{"down", connect.NewError(connect.CodeUnavailable, errors.New("dial")), service.KindUnavailable, ""},
		{"refused", connect.NewError(connect.CodeUnauthenticated, errors.New("token")), service.KindUnavailable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := serviceErr("op", tc.err)
			var se *service.Error
			if !errors.As(err, &se) || se.Kind != tc.kind || se.Field != tc.field {
				t.Fatalf("%v → %#v, want kind %v field %q", tc.err, err, tc.kind, tc.field)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("the RPC error is not kept as the cause: %v", err)
			}
		})
	}
	if err := serviceErr("op", connect.NewError(connect.CodeCanceled, context.Canceled)); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled → %v", err)
	}
	if err := serviceErr("op", nil); err != nil {
		t.Errorf("nil → %v", err)
	}
	plain := errors.New("connection reset")
	if err := serviceErr("op", plain); !errors.Is(err, plain) || service.KindOf(err) == service.KindNotFound {
		t.Errorf("plain error → %v", err)
	}
}
