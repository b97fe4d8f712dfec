package firecracker

// A fake Firecracker for tests: the test binary re-executes itself as
// `firecracker --api-sock PATH --id ID` (selected by an environment
// variable in TestMain), so the driver's real process handling runs too.
// The fake validates every request against Firecracker's swagger spec
// (../shared/specs/firecracker/firecracker.yaml from the repo root) with
// kin-openapi, enforces the pre-boot / post-boot rules the real VMM has,
// and appends each call to a JSON-lines record the test reads back.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

const (
	envFake   = "HEARTH_FAKE_FIRECRACKER"
	envSpec   = "HEARTH_FAKE_FC_SPEC"
	envRecord = "HEARTH_FAKE_FC_RECORD"
)

func TestMain(m *testing.M) {
	if os.Getenv(envFake) != "" {
		os.Exit(runFake(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// call is one recorded API request.
type call struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
	Status int             `json:"status"`
	Error  string          `json:"error,omitempty"`
}

// specPath finds the Firecracker spec relative to the repo root.
func specPath() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "..", "shared", "specs", "firecracker", "firecracker.yaml")
			if _, err := os.Stat(p); err != nil {
				return "", err
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repo root (go.mod) not found")
		}
		dir = parent
	}
}

// loadRouter turns the swagger 2.0 spec into an OpenAPI 3 router.
func loadRouter(path string) (routers.Router, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc2 openapi2.T
	if err := openapi2.UnmarshalFromData(data, &doc2); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	doc3, err := openapi2conv.ToV3(&doc2)
	if err != nil {
		return nil, fmt.Errorf("convert %s: %w", path, err)
	}
	// Match any host: requests arrive over a unix socket.
	doc3.Servers = openapi3.Servers{{URL: "/"}}
	return gorillamux.NewRouter(doc3)
}

// fakeVMM is the API state machine.
type fakeVMM struct {
	router routers.Router
	record *os.File

	mu         sync.Mutex
	state      string // "Not started", "Running", "Paused"
	configured bool   // anything but logger/metrics set
	loaded     bool
}

func (f *fakeVMM) validate(r *http.Request, body []byte) error {
	req := r.Clone(r.Context())
	req.URL.Scheme, req.URL.Host = "http", "localhost"
	req.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := f.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("no such operation in the spec: %w", err)
	}
	return openapi3filter.ValidateRequest(r.Context(), &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true},
	})
}

// rules enforces what real Firecracker refuses: pre-boot calls after boot,
// snapshot/create on a running VM, snapshot/load on a configured process.
func (f *fakeVMM) rules(r *http.Request, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	preBoot := func() error {
		if f.state != "Not started" {
			return errors.New("the requested operation is not supported after starting the microVM")
		}
		return nil
	}
	switch p := r.URL.Path; {
	case r.Method == http.MethodGet:
		return nil
	case p == "/logger" || p == "/metrics":
		return nil
	case p == "/snapshot/load":
		if f.configured || f.loaded {
			return errors.New("loading a snapshot is only allowed on a fresh process")
		}
		var v SnapshotLoadParams
		_ = json.Unmarshal(body, &v)
		f.loaded = true
		f.state = "Paused"
		if v.ResumeVM {
			f.state = "Running"
		}
		return nil
	case p == "/actions":
		if err := preBoot(); err != nil {
			return err
		}
		f.state = "Running"
		return nil
	case p == "/vm":
		if f.state == "Not started" {
			return errors.New("the microVM is not running")
		}
		var v VM
		_ = json.Unmarshal(body, &v)
		f.state = map[string]string{"Paused": "Paused", "Resumed": "Running"}[v.State]
		return nil
	case p == "/snapshot/create":
		if f.state != "Paused" {
			return errors.New("the microVM must be paused to create a snapshot")
		}
		return nil
	default:
		if err := preBoot(); err != nil {
			return err
		}
		if f.loaded {
			return errors.New("cannot configure a microVM restored from a snapshot")
		}
		f.configured = true
		return nil
	}
}

func (f *fakeVMM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c := call{Method: r.Method, Path: r.URL.Path, Status: http.StatusNoContent}
	if len(bytes.TrimSpace(body)) > 0 {
		c.Body = json.RawMessage(body)
	}
	err := f.validate(r, body)
	if err == nil {
		err = f.rules(r, body)
	}
	if err != nil {
		c.Status, c.Error = http.StatusBadRequest, err.Error()
	}
	// Health polls (GET /) are not interesting to record.
	if r.Method != http.MethodGet {
		line, _ := json.Marshal(c)
		_, _ = f.record.Write(append(line, '\n'))
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case err != nil:
		w.WriteHeader(c.Status)
		_ = json.NewEncoder(w).Encode(map[string]string{"fault_message": err.Error()})
	case r.Method == http.MethodGet && r.URL.Path == "/":
		f.mu.Lock()
		st := f.state
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(InstanceInfo{AppName: "Firecracker", ID: "fake", State: st, VMMVersion: "fake"})
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// runFake is the fake firecracker's main.
func runFake(args []string) int {
	var sock string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--api-sock" {
			sock = args[i+1]
		}
	}
	if sock == "" {
		fmt.Fprintln(os.Stderr, "fake firecracker: --api-sock required")
		return 2
	}
	router, err := loadRouter(os.Getenv(envSpec))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 2
	}
	rec, err := os.OpenFile(os.Getenv(envRecord), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 2
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 2
	}
	fmt.Println("fake firecracker: guest console would be here")
	_ = http.Serve(ln, &fakeVMM{router: router, record: rec, state: "Not started"})
	return 1
}

// fakeEnv points the driver at the fake; it skips without the spec.
func fakeEnv(t *testing.T) (d *Driver, record string) {
	t.Helper()
	spec, err := specPath()
	if err != nil {
		t.Skipf("needs the Firecracker API spec at ../shared/specs/firecracker/firecracker.yaml from the repo root: %v", err)
	}
	record = filepath.Join(t.TempDir(), "calls.jsonl")
	t.Setenv(envFake, "1")
	t.Setenv(envSpec, spec)
	t.Setenv(envRecord, record)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Binary: exe}), record
}

func readCalls(t *testing.T, record string) []call {
	t.Helper()
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	var calls []call
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var c call
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
	}
	for _, c := range calls {
		if c.Status != http.StatusNoContent {
			t.Errorf("%s %s rejected: %s (body %s)", c.Method, c.Path, c.Error, c.Body)
		}
	}
	return calls
}

func ops(calls []call) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = c.Method + " " + c.Path
	}
	return out
}

// TestSpecValidatorRejects proves the validator is not a rubber stamp.
func TestSpecValidatorRejects(t *testing.T) {
	t.Parallel()
	spec, err := specPath()
	if err != nil {
		t.Skipf("needs the Firecracker API spec at ../shared/specs/firecracker/firecracker.yaml: %v", err)
	}
	router, err := loadRouter(spec)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeVMM{router: router, state: "Not started"}
	tests := []struct {
		name, method, path, body string
		ok                       bool
	}{
		{"valid machine config", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":512}`, true},
		{"missing required field", "PUT", "/machine-config", `{"vcpu_count":2}`, false},
		{"wrong type", "PUT", "/machine-config", `{"vcpu_count":"two","mem_size_mib":512}`, false},
		{"bad enum", "PATCH", "/vm", `{"state":"Frozen"}`, false},
		{"bad memory backend", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"Disk","backend_path":"/m"}}`, false},
		{"unknown path", "PUT", "/no-such-thing", `{}`, false},
		{"valid action", "PUT", "/actions", `{"action_type":"InstanceStart"}`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequestWithContext(context.Background(), tc.method, "http://localhost"+tc.path, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", "application/json")
			err := f.validate(r, []byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
