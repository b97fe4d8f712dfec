package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// APIError is an error answer of the API ({code, message}).
type APIError struct {
	Status  int    // HTTP status
	Message string // the server's message
	Method  string
	Path    string // request path, for choosing a hint
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// Hint says what to do next, or "".
func (e *APIError) Hint() string {
	switch e.Status {
	case http.StatusUnauthorized:
		return "run `hearth login --url URL` again (sessions expire), or check HEARTH_API_KEY"
	case http.StatusForbidden:
		return "this needs a platform admin (hearth admin promote --email E on the server)"
	case http.StatusNotFound:
		switch {
		case e.Method == http.MethodPost && (e.Path == "/v1/sandboxes" || e.Path == "/v1/snapshots") && strings.Contains(e.Message, "template"):
			return "list templates with `hearth template ls`"
		case strings.HasPrefix(e.Path, "/v1/sandboxes"), e.Path == "/v1/snapshots":
			return "list your sandboxes with `hearth sandbox ls`"
		case strings.HasPrefix(e.Path, "/v1/snapshots"):
			return "list snapshot templates with `hearth snapshot ls`"
		case strings.HasPrefix(e.Path, "/v1/api-keys"):
			return "list keys with `hearth key ls`"
		case strings.HasPrefix(e.Path, "/v1/"):
			return "is the URL a hearth server? check `hearth login --url`"
		}
	case http.StatusConflict:
		if strings.HasPrefix(e.Path, "/v1/sandboxes") || (e.Path == "/v1/snapshots" && strings.Contains(e.Message, "sandbox")) {
			return "the sandbox's state does not allow this now; see `hearth sandbox get ID`"
		}
		return "it already exists or is in use"
	case http.StatusRequestEntityTooLarge:
		return "the server refuses a body this large"
	case http.StatusTooManyRequests:
		return "too many attempts; wait a minute and retry"
	case http.StatusNotImplemented:
		return "this server or its hosts do not support this operation"
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return "no host could do it now (agent down or out of capacity); retry later"
	case http.StatusBadRequest:
		return "check the arguments (--help shows them)"
	}
	return ""
}

// UsageError is a mistake the user can fix locally (missing login, bad
// argument).
type UsageError struct {
	Msg  string
	Hint string
	Err  error // optional cause, for errors.Is
}

func (e *UsageError) Error() string { return e.Msg }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef builds a UsageError.
func Usagef(hint, format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// ConnError says the server could not be reached at all.
type ConnError struct {
	URL string
	Err error
}

func (e *ConnError) Error() string {
	var ne net.Error
	if errors.As(e.Err, &ne) && ne.Timeout() {
		return fmt.Sprintf("no answer from hearth at %s in time: %v", e.URL, e.Err)
	}
	return fmt.Sprintf("cannot reach hearth at %s: %v", e.URL, e.Err)
}
func (e *ConnError) Unwrap() error { return e.Err }

// ExitError carries a sandbox command's non-zero exit code to the process
// exit status; its output has been printed already.
type ExitError struct{ Code int }

func (e *ExitError) Error() string   { return fmt.Sprintf("command exited with status %d", e.Code) }
func (e *ExitError) ExitCode() int   { return e.Code }
func (e *ExitError) Silent() bool    { return true }
func (e *ExitError) Is(t error) bool { _, ok := t.(*ExitError); return ok }

// ExitCode is the process exit status for err: 0 for nil, the command's
// code for an ExitError, 130 for an interrupt, else 1.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if errors.Is(err, context.Canceled) {
		return 130
	}
	return 1
}

// Explain returns err as one line plus, where there is one, a hint line:
//
//	sandbox not found (HTTP 404)
//	hint: list your sandboxes with `hearth sandbox ls`
//
// It is what the commands return, so main prints it as it is.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return err
	}
	hint := ""
	var ae *APIError
	var ue *UsageError
	var ce *ConnError
	switch {
	case errors.As(err, &ae):
		hint = ae.Hint()
	case errors.As(err, &ue):
		hint = ue.Hint
	case errors.As(err, &ce):
		hint = "is the server running? check the URL (`hearth login --url URL` or HEARTH_URL)"
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("interrupted: %w", err)
	}
	if hint == "" {
		return err
	}
	return &explained{err: err, hint: hint}
}

type explained struct {
	err  error
	hint string
}

func (e *explained) Error() string { return e.err.Error() + "\nhint: " + e.hint }
func (e *explained) Unwrap() error { return e.err }
