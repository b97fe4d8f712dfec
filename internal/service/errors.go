package service

import (
	"errors"
	"fmt"

	"github.com/hearth-sandbox/hearth/internal/store"
)

// Kind classifies a use-case failure. The api package maps each kind to one
// HTTP status in one place; nothing else decides statuses.
type Kind int

const (
	KindInternal Kind = iota
	KindInvalidArgument
	KindNotFound
	KindConflict
	KindUnauthenticated
	KindPermissionDenied
	KindUnavailable
	// KindUnimplemented: the operation cannot be done here at all (a host
	// whose VMM cannot snapshot cannot pause), as opposed to "not now".
	KindUnimplemented
	// KindTooLarge: an upload over its limit (a build context).
	KindTooLarge
)

func (k Kind) String() string {
	switch k {
	case KindInvalidArgument:
		return "invalid_argument"
	case KindNotFound:
		return "not_found"
	case KindConflict:
		return "conflict"
	case KindUnauthenticated:
		return "unauthenticated"
	case KindPermissionDenied:
		return "permission_denied"
	case KindUnavailable:
		return "unavailable"
	case KindUnimplemented:
		return "unimplemented"
	case KindTooLarge:
		return "too_large"
	default:
		return "internal"
	}
}

// Error is a failure a client may see: Message is safe to show, Err (if any)
// is the cause for logs.
type Error struct {
	Kind    Kind
	Field   string // for KindInvalidArgument: the offending input field
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// InvalidArgument names the field so clients can point at it.
func InvalidArgument(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return &Error{Kind: KindInvalidArgument, Field: field, Message: msg}
}

// NotFound says "what" does not exist. Other teams' resources get the very
// same error, so existence never leaks.
func NotFound(what string) error {
	return &Error{Kind: KindNotFound, Message: what + " not found"}
}

func Conflict(format string, args ...any) error {
	return &Error{Kind: KindConflict, Message: fmt.Sprintf(format, args...)}
}

func Unauthenticated(msg string) error {
	return &Error{Kind: KindUnauthenticated, Message: msg}
}

func PermissionDenied(msg string) error {
	return &Error{Kind: KindPermissionDenied, Message: msg}
}

// Unavailable is a dependency (host, database) failing; cause goes to logs.
func Unavailable(msg string, cause error) error {
	return &Error{Kind: KindUnavailable, Message: msg, Err: cause}
}

// Unimplemented is an operation this deployment cannot perform (clients
// should not retry); cause goes to logs.
func Unimplemented(msg string, cause error) error {
	return &Error{Kind: KindUnimplemented, Message: msg, Err: cause}
}

// TooLarge is an upload over its limit.
func TooLarge(format string, args ...any) error {
	return &Error{Kind: KindTooLarge, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of err; plain errors are KindInternal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// fromStore turns the store's sentinel errors into kinds; what names the
// resource for NotFound, conflictMsg explains a unique violation.
func fromStore(err error, what, conflictMsg string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return NotFound(what)
	case errors.Is(err, store.ErrConflict):
		return &Error{Kind: KindConflict, Message: conflictMsg, Err: err}
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}
