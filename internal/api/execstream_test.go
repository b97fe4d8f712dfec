package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// event is one decoded NDJSON line of a streamed exec.
type event struct {
	Type     string `json:"type"`
	Data     string `json:"data"`
	ExitCode *int   `json:"exit_code"`
	Code     int    `json:"code"`
	Message  string `json:"message"`
}

// execStream is a streamed exec response being read line by line.
type execStream struct {
	e    *env
	res  *http.Response
	rd   *bufio.Reader
	path string
}

// stream starts POST /v1/sandboxes/{id}/exec with Accept:
// application/x-ndjson. The request gives up after a minute, so a server
// that does not flush fails the test instead of hanging it.
func (e *env) stream(id string, body any, h hdr) *execStream {
	e.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	e.tb.Cleanup(cancel)
	j, err := json.Marshal(body)
	if err != nil {
		e.tb.Fatal(err)
	}
	path := "/v1/sandboxes/" + id + "/exec"
	req, err := http.NewRequestWithContext(ctx, "POST", e.srv.URL+path, bytes.NewReader(j))
	if err != nil {
		e.tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/x-ndjson")
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.tb.Fatalf("stream exec: %v", err)
	}
	e.tb.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != ndjson {
		b, _ := io.ReadAll(res.Body)
		e.tb.Fatalf("stream exec: %d %s: %s", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	return &execStream{e: e, res: res, rd: bufio.NewReader(res.Body), path: path}
}

// next reads one event, checking it against the spec's ndjson schema of
// the exec route. ok is false at the end of the body.
func (s *execStream) next() (ev event, ok bool) {
	s.e.tb.Helper()
	line, err := s.rd.ReadBytes('\n')
	if err == io.EOF && len(line) == 0 {
		return event{}, false
	}
	if err != nil {
		s.e.tb.Fatalf("read event: %v (partial line %q)", err, line)
	}
	var raw any
	if err := json.Unmarshal(line, &raw); err != nil {
		s.e.tb.Fatalf("event line %q is not JSON: %v", line, err)
	}
	s.e.checkEvent(s.res.Request, raw, line)
	if err := json.Unmarshal(line, &ev); err != nil {
		s.e.tb.Fatal(err)
	}
	return ev, true
}

// rest reads the remaining events.
func (s *execStream) rest() []event {
	s.e.tb.Helper()
	var out []event
	for {
		ev, ok := s.next()
		if !ok {
			return out
		}
		out = append(out, ev)
	}
}

// checkEvent validates one line against the schema openapi.yaml gives the
// route's 200 application/x-ndjson response.
func (e *env) checkEvent(req *http.Request, v any, line []byte) {
	e.tb.Helper()
	route, _, err := e.router.FindRoute(req)
	if err != nil {
		e.tb.Fatalf("exec route not in the spec: %v", err)
	}
	ok := route.Operation.Responses.Status(http.StatusOK)
	if ok == nil || ok.Value.Content.Get(ndjson) == nil {
		e.tb.Fatalf("spec: exec has no 200 %s response", ndjson)
	}
	if err := ok.Value.Content.Get(ndjson).Schema.Value.VisitJSON(v); err != nil {
		e.tb.Errorf("event %s does not match the spec: %v", line, err)
	}
}

// merged joins consecutive events of the same type: chunk boundaries are
// the host's business, the order of streams is not.
func merged(evs []event) []event {
	var out []event
	for _, ev := range evs {
		if n := len(out); n > 0 && (ev.Type == "stdout" || ev.Type == "stderr") && out[n-1].Type == ev.Type {
			out[n-1].Data += ev.Data
			continue
		}
		out = append(out, ev)
	}
	return out
}

func TestExecStream(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		a := e.signup("stream-a@example.com")
		b := e.signup("stream-b@example.com")
		sb := e.createSandbox(a, nil)
		k := apiKey(a.key)
		// € is three bytes: with the fake's 4-byte chunks, "second €€" has
		// characters split across chunks.
		script := map[string]any{"cmd": "emit", "args": []string{"1:first", "2:warning", "1:second €€", "exit:3"}}

		// Events arrive in order, the exit last.
		func() {
			s := e.stream(sb.ID, script, k)
			evs := s.rest()
			if len(evs) < 6 {
				t.Errorf("only %d events: output not chunked?", len(evs))
			}
			for i, ev := range evs {
				if (ev.Type == "stdout" || ev.Type == "stderr") && ev.Data == "" {
					t.Errorf("event %d is empty", i)
				}
				if strings.ContainsRune(ev.Data, '\uFFFD') {
					t.Errorf("event %d %q has a mangled character", i, ev.Data)
				}
			}
			got := merged(evs)
			want := []event{{Type: "stdout", Data: "first\n"}, {Type: "stderr", Data: "warning\n"}, {Type: "stdout", Data: "second €€\n"}, {Type: "exit"}}
			if len(got) != len(want) {
				t.Fatalf("events %+v, want %+v", got, want)
			}
			for i := range want {
				if got[i].Type != want[i].Type || got[i].Data != want[i].Data {
					t.Errorf("event %d = %s %q, want %s %q", i, got[i].Type, got[i].Data, want[i].Type, want[i].Data)
				}
			}
			if last := got[len(got)-1]; last.Type != "exit" || last.ExitCode == nil || *last.ExitCode != 3 {
				t.Errorf("last event %+v, want exit 3", last)
			}
		}()

		// An exit status of 0 is sent too.
		func() {
			evs := e.stream(sb.ID, map[string]any{"cmd": "exit", "args": []string{"0"}}, k).rest()
			if len(evs) != 1 || evs[0].Type != "exit" || evs[0].ExitCode == nil || *evs[0].ExitCode != 0 {
				t.Fatalf("events %+v, want one exit 0", evs)
			}
		}()

		// Flushed per event: the first line is readable while the command runs.
		func() {
			entered, release := e.host.HoldStreams()
			defer release()
			s := e.stream(sb.ID, script, k)
			// The fake host now blocks after its first chunk until released:
			// this line can only be here if the handler flushed it.
			first, ok := s.next()
			if !ok || first.Type != "stdout" || !strings.HasPrefix("first\n", first.Data) {
				t.Fatalf("first event %+v", first)
			}
			if id := <-entered; id != sb.ID {
				t.Fatalf("held stream of %q", id)
			}
			release()
			got := merged(append([]event{first}, s.rest()...))
			if len(got) != 4 || got[0].Data != "first\n" || got[3].Type != "exit" {
				t.Fatalf("events after release %+v", got)
			}
		}()

		// Without Accept: application/x-ndjson, the buffered answer is unchanged.
		func() {
			for _, h := range []hdr{k, append(hdr{"Accept", "application/json"}, k...), append(hdr{"Accept", "application/x-ndjson;q=0, application/json"}, k...)} {
				r := e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", script, h)
				e.want(r, http.StatusOK, "buffered exec")
				var res struct {
					Stdout, Stderr string
					ExitCode       int `json:"exit_code"`
				}
				r.json(t, &res)
				if ct := r.header.Get("Content-Type"); ct != "application/json" || res.Stdout != "first\nsecond €€\n" || res.Stderr != "warning\n" || res.ExitCode != 3 {
					t.Errorf("headers %q: %s %s", h[:len(h)-2], ct, r.body)
				}
			}
		}()

		// Errors before the stream starts are plain {code,message} errors.
		func() {
			nd := func(h hdr) hdr { return append(hdr{"Accept", ndjson}, h...) }
			// e.do checks {code,message}, application/json and the spec.
			got := e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", script, nd(apiKey(b.key)))
			ref := e.do("POST", "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa/exec", script, nd(apiKey(b.key)))
			if got.status != http.StatusNotFound || !bytes.Equal(got.body, ref.body) {
				t.Errorf("team B streaming A's sandbox: %d %s; missing sandbox: %d %s", got.status, got.body, ref.status, ref.body)
			}
			e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"args": []string{"x"}}, nd(k)), http.StatusBadRequest, "stream without cmd")
			e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"cmd": "echo", "timeout_s": 0.5}, nd(k)), http.StatusBadRequest, "fractional timeout")
			e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", script, hdr{"Accept", ndjson}), http.StatusUnauthorized, "stream without credentials")
		}()

		// A host failing mid-stream: an error event, last.
		func() {
			e.host.FailStreams(errors.New("agent connection reset"))
			defer e.host.FailStreams(nil)
			evs := e.stream(sb.ID, script, k).rest()
			if len(evs) != 2 || evs[0].Type != "stdout" || evs[1].Type != "error" || evs[1].Code != http.StatusServiceUnavailable || evs[1].Message == "" {
				t.Fatalf("events %+v, want one chunk then a 503 error", evs)
			}
			if strings.Contains(evs[1].Message, "agent connection reset") {
				t.Errorf("error event leaks the cause: %q", evs[1].Message)
			}
		}()

		// A paused sandbox (no auto-resume) is a plain 409.
		func() {
			paused := e.createSandbox(a, nil)
			e.want(e.do("POST", "/v1/sandboxes/"+paused.ID+"/pause", nil, k), http.StatusOK, "pause")
			e.want(e.do("POST", "/v1/sandboxes/"+paused.ID+"/exec", script, append(hdr{"Accept", ndjson}, k...)), http.StatusConflict, "stream in a paused sandbox")
		}()
	})
}

func TestWantsNDJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		accept []string
		want   bool
	}{
		{nil, false},
		{[]string{"application/json"}, false},
		{[]string{"*/*"}, false},
		{[]string{"application/x-ndjson"}, true},
		{[]string{"Application/X-NDJSON; charset=utf-8"}, true},
		{[]string{"application/json, application/x-ndjson;q=0.5"}, true},
		{[]string{"application/json", "application/x-ndjson"}, true},
		{[]string{"application/x-ndjson;q=0"}, false},
		{[]string{"application/x-ndjsonish"}, false},
	} {
		r, _ := http.NewRequest("POST", "/", nil)
		for _, a := range tc.accept {
			r.Header.Add("Accept", a)
		}
		if got := wantsNDJSON(r); got != tc.want {
			t.Errorf("Accept %q: %v, want %v", tc.accept, got, tc.want)
		}
	}
}

func TestPartialRune(t *testing.T) {
	t.Parallel()
	euro := []byte("€") // e2 82 ac
	for _, tc := range []struct {
		in   []byte
		want int
	}{
		{nil, 0},
		{[]byte("abc"), 0},
		{[]byte("a€"), 0},
		{append([]byte("a"), euro[:1]...), 1},
		{append([]byte("a"), euro[:2]...), 2},
		{[]byte{0xff}, 0},       // not UTF-8 at all: nothing to wait for
		{[]byte{'a', 0x82}, 0},  // a stray continuation byte
		{[]byte{0xf0, 0x9f}, 2}, // start of a 4-byte character
		{[]byte{0xf0, 0x9f, 0x98}, 3},
	} {
		if got := partialRune(tc.in); got != tc.want {
			t.Errorf("partialRune(% x) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
