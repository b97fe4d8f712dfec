// Package servicetest provides an in-process HostClient for control-plane
// tests. It stands at the VM boundary only: everything above it (service,
// store, HTTP) is real in those tests; VM behaviour is tested end to end
// elsewhere.
package servicetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// FakeHost keeps sandboxes, files and snapshots in memory. Exec and
// ExecStream support "echo ARGS..." (stdout), "emit 1:OUT 2:ERR ...
// [exit:N]" (lines to stdout and stderr, in order), "cat PATH" and
// "exit N"; other commands exit 127.
// Safe for concurrent use.
type FakeHost struct {
	ID string
	// VolumesDir holds the host's volumes (volumes.go); empty: none.
	VolumesDir string
	// ReadCut, when > 0, makes sandbox and volume file reads fail after
	// that many bytes (a host that goes away mid-stream).
	ReadCut atomic.Int64

	mu        sync.Mutex
	sandboxes map[string]*fakeSandbox
	snapshots map[string]string // template ID -> source sandbox ID
	creates   []service.CreateSandboxRequest
	// FailCreate, when set, makes CreateSandbox fail with this error.
	failCreate error
	// failPause, failResume: see FailPauses, FailResumes.
	failPause, failResume error
	// pauseHold, when set, blocks PauseSandbox until closed; pauseEntered
	// hears each blocked call's sandbox ID (see HoldPauses).
	pauseHold    chan struct{}
	pauseEntered chan string
	// pauses, resumes count calls that changed a sandbox's state.
	pauses, resumes int
	// streamHold, streamEntered, failStream: see HoldStreams, FailStreams.
	streamHold    chan struct{}
	streamEntered chan string
	failStream    error
}

type fakeSandbox struct {
	state  string
	files  map[string][]byte
	env    map[string]string
	egress egress.Policy
}

var _ service.HostClient = (*FakeHost)(nil)

// NewFakeHost returns an empty host called id.
func NewFakeHost(id string) *FakeHost {
	return &FakeHost{ID: id, sandboxes: map[string]*fakeSandbox{}, snapshots: map[string]string{}}
}

// FailCreates makes later CreateSandbox calls fail with err (nil: succeed).
func (h *FakeHost) FailCreates(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failCreate = err
}

// FailPauses makes later PauseSandbox calls fail with err, leaving the
// sandbox running (nil: succeed).
func (h *FakeHost) FailPauses(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failPause = err
}

// FailResumes makes later ResumeSandbox calls fail with err, leaving the
// sandbox paused (nil: succeed).
func (h *FakeHost) FailResumes(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failResume = err
}

// HoldPauses makes later PauseSandbox calls block (before pausing) until
// release is called; entered receives the sandbox ID of each call as it
// starts waiting. release is idempotent.
func (h *FakeHost) HoldPauses() (entered <-chan string, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hold, ch := make(chan struct{}), make(chan string, 64)
	h.pauseHold, h.pauseEntered = hold, ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			close(hold)
			h.pauseHold = nil
		})
	}
}

// Pauses and Resumes count the calls that paused or resumed a sandbox.
func (h *FakeHost) Pauses() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pauses
}

func (h *FakeHost) Resumes() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.resumes
}

// Creates returns every CreateSandbox request received, in order.
func (h *FakeHost) Creates() []service.CreateSandboxRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]service.CreateSandboxRequest(nil), h.creates...)
}

// State returns the host-side state of a sandbox ("" when absent).
func (h *FakeHost) State(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sb, ok := h.sandboxes[id]; ok {
		return sb.state
	}
	return ""
}

// HasSnapshot reports whether the host holds snapshot files for templateID.
func (h *FakeHost) HasSnapshot(templateID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.snapshots[templateID]
	return ok
}

func (h *FakeHost) get(id string) (*fakeSandbox, error) {
	sb, ok := h.sandboxes[id]
	if !ok {
		return nil, fmt.Errorf("fakehost: sandbox %s: %w", id, errNoSandbox)
	}
	return sb, nil
}

var errNoSandbox = fmt.Errorf("no such sandbox")

func (h *FakeHost) CreateSandbox(_ context.Context, req service.CreateSandboxRequest) (service.SandboxRuntime, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.creates = append(h.creates, req)
	if h.failCreate != nil {
		return service.SandboxRuntime{}, h.failCreate
	}
	if _, ok := h.sandboxes[req.SandboxID]; ok {
		return service.SandboxRuntime{}, fmt.Errorf("fakehost: sandbox %s exists", req.SandboxID)
	}
	h.sandboxes[req.SandboxID] = &fakeSandbox{state: string(sandbox.StateRunning), files: map[string][]byte{}, env: maps.Clone(req.Env)}
	return service.SandboxRuntime{SandboxID: req.SandboxID, State: string(sandbox.StateRunning), Address: "127.0.0.1:49983", StartedAt: time.Now()}, nil
}

func (h *FakeHost) DestroySandbox(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.sandboxes, id) // idempotent, like the real agent
	return nil
}

func (h *FakeHost) PauseSandbox(ctx context.Context, id string) error {
	h.mu.Lock()
	hold, entered := h.pauseHold, h.pauseEntered
	h.mu.Unlock()
	if hold != nil {
		entered <- id
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failPause != nil {
		return h.failPause
	}
	sb, err := h.get(id)
	if err != nil {
		return err
	}
	if sb.state != string(sandbox.StatePaused) {
		sb.state = string(sandbox.StatePaused)
		h.pauses++
	}
	return nil
}

func (h *FakeHost) ResumeSandbox(_ context.Context, req service.ResumeSandboxRequest) (service.SandboxRuntime, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failResume != nil {
		return service.SandboxRuntime{}, h.failResume
	}
	sb, err := h.get(req.SandboxID)
	if err != nil {
		return service.SandboxRuntime{}, err
	}
	if sb.state != string(sandbox.StateRunning) {
		sb.state = string(sandbox.StateRunning)
		h.resumes++
	}
	return service.SandboxRuntime{SandboxID: req.SandboxID, State: string(sandbox.StateRunning), StartedAt: time.Now()}, nil
}

// UpdateSandboxNetwork records the policy (see Network).
func (h *FakeHost) UpdateSandboxNetwork(_ context.Context, id string, p egress.Policy) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	sb, err := h.get(id)
	if err != nil {
		return err
	}
	if sb.state != string(sandbox.StateRunning) && sb.state != string(sandbox.StatePaused) {
		return fmt.Errorf("sandbox %s is %s", id, sb.state)
	}
	sb.egress = p
	return nil
}

// Network returns the egress policy the host holds for a sandbox.
func (h *FakeHost) Network(id string) egress.Policy {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sb, ok := h.sandboxes[id]; ok {
		return sb.egress
	}
	return egress.Policy{}
}

func (h *FakeHost) ListSandboxes(context.Context) ([]service.SandboxRuntime, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]service.SandboxRuntime, 0, len(h.sandboxes))
	for id, sb := range h.sandboxes {
		out = append(out, service.SandboxRuntime{SandboxID: id, State: sb.state})
	}
	return out, nil
}

func (h *FakeHost) Exec(_ context.Context, id string, req service.ExecRequest) (service.ExecResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	chunks, code, err := h.run(id, req)
	if err != nil {
		return service.ExecResult{}, err
	}
	var stdout, stderr strings.Builder
	for _, c := range chunks {
		if c.stream == service.StreamStderr {
			stderr.WriteString(c.data)
		} else {
			stdout.WriteString(c.data)
		}
	}
	return service.ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: code}, nil
}

// StreamChunkSize is the most bytes ExecStream hands over at once: small,
// so that streamed output arrives in several chunks that split lines and
// multi-byte characters, as real output may.
const StreamChunkSize = 4

// ExecStream produces what Exec would, in chunks of at most
// StreamChunkSize bytes, stdout and stderr in the command's order. See
// HoldStreams and FailStreams for steering it from tests.
func (h *FakeHost) ExecStream(ctx context.Context, id string, req service.ExecRequest, out service.ExecOutput) (int, error) {
	h.mu.Lock()
	chunks, code, err := h.run(id, req)
	hold, entered, fail := h.streamHold, h.streamEntered, h.failStream
	h.mu.Unlock()
	if err != nil {
		return 0, err
	}
	first := true
	for _, c := range chunks {
		for data := c.data; data != ""; {
			n := min(len(data), StreamChunkSize)
			if err := out(c.stream, []byte(data[:n])); err != nil {
				return 0, err
			}
			data = data[n:]
			if !first {
				continue
			}
			first = false
			if fail != nil {
				return 0, fail
			}
			if hold != nil {
				entered <- id
				select {
				case <-hold:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
		}
	}
	return code, nil
}

// HoldStreams makes later ExecStream calls block after their first chunk
// of output until release is called; entered receives the sandbox ID of
// each call as it starts waiting. release is idempotent.
func (h *FakeHost) HoldStreams() (entered <-chan string, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hold, ch := make(chan struct{}), make(chan string, 64)
	h.streamHold, h.streamEntered = hold, ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			close(hold)
			h.streamHold = nil
		})
	}
}

// FailStreams makes later ExecStream calls fail with err right after their
// first chunk of output, as a host lost mid-command would (nil: succeed).
func (h *FakeHost) FailStreams(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failStream = err
}

// chunk is a piece of a fake command's output.
type chunk struct{ stream, data string }

// run is the fake's command interpreter; h.mu must be held.
func (h *FakeHost) run(id string, req service.ExecRequest) (out []chunk, exitCode int, err error) {
	sb, err := h.get(id)
	if err != nil {
		return nil, 0, err
	}
	if sb.state != string(sandbox.StateRunning) {
		return nil, 0, fmt.Errorf("fakehost: sandbox %s is %s", id, sb.state)
	}
	stdout := func(s string) []chunk { return []chunk{{service.StreamStdout, s}} }
	stderr := func(s string) []chunk { return []chunk{{service.StreamStderr, s}} }
	switch req.Cmd {
	case "echo":
		return stdout(strings.Join(req.Args, " ") + "\n"), 0, nil
	case "emit":
		// emit 1:TEXT 2:TEXT ... [exit:N]: each TEXT and a newline to
		// stdout (1) or stderr (2), in order; then exit N.
		for _, a := range req.Args {
			fd, text, _ := strings.Cut(a, ":")
			switch fd {
			case "1":
				out = append(out, stdout(text+"\n")...)
			case "2":
				out = append(out, stderr(text+"\n")...)
			case "exit":
				fmt.Sscan(text, &exitCode)
			default:
				return stderr("usage: emit 1:TEXT 2:TEXT ... [exit:N]\n"), 2, nil
			}
		}
		return out, exitCode, nil
	case "cat":
		if len(req.Args) != 1 {
			return stderr("usage: cat PATH\n"), 2, nil
		}
		b, ok := sb.files[req.Args[0]]
		if !ok {
			return stderr("cat: " + req.Args[0] + ": No such file or directory\n"), 1, nil
		}
		return stdout(string(b)), 0, nil
	case "exit":
		var code int
		if len(req.Args) == 1 {
			fmt.Sscan(req.Args[0], &code)
		}
		return nil, code, nil
	default:
		return stderr(req.Cmd + ": command not found\n"), 127, nil
	}
}

func (h *FakeHost) ReadFile(_ context.Context, id, path string) (io.ReadCloser, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sb, err := h.get(id)
	if err != nil {
		return nil, err
	}
	b, ok := sb.files[path]
	if !ok {
		return nil, service.NotFound("file " + path)
	}
	return h.cut(io.NopCloser(bytes.NewReader(b))), nil
}

func (h *FakeHost) WriteFile(_ context.Context, id, path string, r io.Reader) error {
	b, err := io.ReadAll(r) // outside the lock: r may be a slow network body
	if err != nil {
		return fmt.Errorf("fakehost: read upload: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	sb, err := h.get(id)
	if err != nil {
		return err
	}
	sb.files[path] = b
	return nil
}

func (h *FakeHost) CreateSnapshot(_ context.Context, sandboxID, templateID string) (service.SnapshotInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.get(sandboxID); err != nil {
		return service.SnapshotInfo{}, err
	}
	h.snapshots[templateID] = sandboxID
	return service.SnapshotInfo{TemplateID: templateID}, nil
}

func (h *FakeHost) DeleteSnapshot(_ context.Context, templateID string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.snapshots, templateID)
	return nil
}

func (h *FakeHost) Ping(context.Context) (service.HostInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return service.HostInfo{HostID: h.ID, VCPUs: 16, MemoryMB: 65536, DiskMB: 1 << 20, SandboxCount: len(h.sandboxes), Driver: "fake"}, nil
}
