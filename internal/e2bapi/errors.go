package e2bapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/service"
)

// errorBody is E2B's error shape: code equals the HTTP status. The SDK maps
// 401 to AuthenticationError, 404 to NotFoundError (SandboxNotFoundError on
// sandbox routes), 429 to RateLimitError, 503 to ServiceBusyError and the
// rest to SandboxError with the status.
type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// httpError is a failure decided at the HTTP layer.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errStatus(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// fieldNames renames hearth's input fields to E2B's in messages, so a 400
// names what the SDK user actually sent.
var fieldNames = strings.NewReplacer("timeout_s:", "timeout:", "env:", "envVars:", "template:", "templateID:")

func (s *server) respondError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := s.errorFor(r, err)
	writeError(w, status, msg)
}

// errorFor maps an error to its HTTP status and message, logging what the
// caller cannot fix.
func (s *server) errorFor(r *http.Request, err error) (int, string) {
	var he *httpError
	if errors.As(err, &he) {
		return he.status, he.msg
	}
	var se *service.Error
	if errors.As(err, &se) {
		status := service.HTTPStatus(se.Kind)
		if se.Err != nil || status >= 500 {
			s.log.WarnContext(r.Context(), "e2b request failed", "path", r.URL.Path, "status", status, "err", err)
		}
		return status, fieldNames.Replace(se.Message)
	}
	s.log.ErrorContext(r.Context(), "e2b request: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	return http.StatusInternalServerError, "internal error"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Code: status, Message: msg})
}

// decode reads an optional JSON object into v. Unknown fields are allowed:
// SDKs send fields of newer API versions that older servers ignore (those
// hearth cannot honour are checked explicitly by the handlers).
func decode(r *http.Request, v any) error {
	err := json.NewDecoder(r.Body).Decode(v)
	var maxErr *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return nil
	case errors.As(err, &maxErr):
		return errStatus(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", maxErr.Limit)
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return errStatus(http.StatusBadRequest, "%s: must be %s", typeErr.Field, typeErr.Type)
	default:
		return errStatus(http.StatusBadRequest, "malformed JSON: %v", err)
	}
}
