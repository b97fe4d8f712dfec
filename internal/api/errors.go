package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/service"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiwire.Error{Code: status, Message: msg})
}

// httpError is an error already decided at the HTTP layer (413, 429 ...).
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// respondError writes err as JSON. Internal errors are logged with the
// request ID and answered without details.
func (s *server) respondError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := s.errorFor(r, err)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hearth"`)
	}
	writeError(w, status, msg)
}

// errorFor is the one mapping from an error to what the client sees (the
// HTTP status and a safe message); it logs the error as it deserves.
func (s *server) errorFor(r *http.Request, err error) (status int, msg string) {
	var he *httpError
	if errors.As(err, &he) {
		return he.status, he.msg
	}
	var se *service.Error
	if errors.As(err, &se) {
		status := service.HTTPStatus(se.Kind)
		level := slog.LevelDebug
		if status >= 500 {
			level = slog.LevelWarn
		}
		s.log.Log(r.Context(), level, "request failed", "status", status, "err", err, "request_id", requestIDFrom(r.Context()))
		return status, se.Message
	}
	s.log.ErrorContext(r.Context(), "internal error", "err", err, "method", r.Method, "path", r.URL.Path, "request_id", requestIDFrom(r.Context()))
	return http.StatusInternalServerError, "internal error (request id " + requestIDFrom(r.Context()) + ")"
}

// decode reads one JSON object into v. Unknown fields are refused so typos
// ("memory" for "memory_mb") fail loudly instead of being ignored.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.More() {
			return &httpError{http.StatusBadRequest, "malformed JSON: trailing data after the object"}
		}
		if _, err := dec.Token(); err != io.EOF {
			return &httpError{http.StatusBadRequest, "malformed JSON: trailing data after the object"}
		}
		return nil
	}
	var maxErr *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &maxErr):
		return &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxErr.Limit)}
	case errors.Is(err, io.EOF):
		return &httpError{http.StatusBadRequest, "malformed JSON: empty body, expected an object"}
	case errors.As(err, &typeErr):
		if typeErr.Field != "" {
			return service.InvalidArgument(typeErr.Field, "must be %s", typeErr.Type.String())
		}
		return &httpError{http.StatusBadRequest, "malformed JSON: expected an object"}
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return &httpError{http.StatusBadRequest, "malformed JSON: " + err.Error()}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return service.InvalidArgument(field, "unknown field")
	default:
		return &httpError{http.StatusBadRequest, "malformed JSON: " + err.Error()}
	}
}

func tooLarge(err error) bool {
	var maxErr *http.MaxBytesError
	return errors.As(err, &maxErr)
}
