package api

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// ndjson is the media type of streamed exec output: one JSON object per
// line.
const ndjson = "application/x-ndjson"

// wantsNDJSON reports whether the Accept header lists application/x-ndjson
// (with a non-zero q). Clients that send nothing, */* or application/json
// get the buffered answer, as before streaming existed.
func wantsNDJSON(r *http.Request) bool {
	for _, h := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || mt != ndjson {
				continue
			}
			if q, err := strconv.ParseFloat(params["q"], 64); err == nil && q == 0 {
				continue
			}
			return true
		}
	}
	return false
}

// execStream writes a command's output as NDJSON events, each flushed as
// it is written. The 200 and its headers go out with the first event, so
// anything that fails before the command produced output (validation,
// another team's sandbox, a host refusing) is still an ordinary error
// response; after that, a failure is a last "error" event.
func (s *server) execStream(w http.ResponseWriter, r *http.Request, req service.ExecRequest) error {
	ew := &eventWriter{w: w, rc: http.NewResponseController(w)}
	code, err := s.svc.ExecStream(r.Context(), principalFrom(r.Context()), r.PathValue("id"), req, ew.output)
	if err == nil {
		err = ew.end()
	}
	if err == nil {
		err = ew.write(apiwire.ExecExitEvent{Type: apiwire.EventExit, ExitCode: code})
	}
	switch {
	case err == nil:
		return nil
	case !ew.started:
		return err // nothing sent yet: a normal {code, message} answer
	case errors.Is(err, errClientGone) || r.Context().Err() != nil:
		s.log.DebugContext(r.Context(), "exec stream ended by the client", "err", err, "request_id", requestIDFrom(r.Context()))
		return nil
	}
	status, msg := s.errorFor(r, err)
	if werr := ew.write(apiwire.ExecErrorEvent{Type: apiwire.EventError, Code: status, Message: msg}); werr != nil {
		s.log.DebugContext(r.Context(), "exec stream: could not send the error event", "err", werr, "request_id", requestIDFrom(r.Context()))
	}
	return nil
}

// errClientGone marks a failed write to the client: the command is stopped
// and there is no one left to tell.
var errClientGone = errors.New("client gone")

// eventWriter turns output chunks into NDJSON lines. It holds back an
// incomplete UTF-8 sequence at the end of a chunk until the rest arrives,
// so a character split between chunks is not mangled into U+FFFD by JSON
// encoding; bytes that are not UTF-8 at all are replaced, as in the
// buffered answer.
type eventWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	pending map[string][]byte // stream -> held-back partial character
}

func (e *eventWriter) output(stream string, data []byte) error {
	if held := e.pending[stream]; len(held) > 0 {
		data = append(held, data...)
		e.pending[stream] = nil
	}
	if n := partialRune(data); n > 0 {
		if e.pending == nil {
			e.pending = map[string][]byte{}
		}
		e.pending[stream] = append([]byte(nil), data[len(data)-n:]...)
		data = data[:len(data)-n]
	}
	if len(data) == 0 {
		return nil
	}
	return e.write(apiwire.ExecOutputEvent{Type: stream, Data: string(data)})
}

// end sends what is still held back (a command that ended mid-character).
func (e *eventWriter) end() error {
	for _, stream := range []string{service.StreamStdout, service.StreamStderr} {
		if held := e.pending[stream]; len(held) > 0 {
			e.pending[stream] = nil
			if err := e.write(apiwire.ExecOutputEvent{Type: stream, Data: string(held)}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *eventWriter) write(ev any) error {
	line, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if !e.started {
		e.started = true
		h := e.w.Header()
		h.Set("Content-Type", ndjson)
		h.Set("Cache-Control", "no-store")
		// nginx buffers responses unless told otherwise; self-hosters
		// often put one in front.
		h.Set("X-Accel-Buffering", "no")
		e.w.WriteHeader(http.StatusOK)
	}
	if _, err := e.w.Write(append(line, '\n')); err != nil {
		return errors.Join(errClientGone, err)
	}
	if err := e.rc.Flush(); err != nil {
		return errors.Join(errClientGone, err)
	}
	return nil
}

// partialRune returns the length of an incomplete but so far valid UTF-8
// sequence at the end of b (0 when b ends on a character boundary or in
// bytes that are invalid anyway).
func partialRune(b []byte) int {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < utf8.RuneSelf {
			return 0
		}
		if utf8.RuneStart(c) {
			if utf8.FullRune(b[len(b)-i:]) {
				return 0
			}
			return i
		}
	}
	return 0
}
