// Package fcfake is a fake Firecracker for tests of the Firecracker driver
// and of what is built on it (sandboxsnap). A test binary re-executes
// itself as `firecracker --api-sock PATH --id ID` (Main, called first in
// TestMain, turns such a process into the fake), so the driver's real
// process handling (process group, network and mount namespaces, pid file)
// runs too.
//
// The fake validates every request against Firecracker's swagger spec
// (../shared/specs/firecracker/firecracker.yaml from the repo root) with
// kin-openapi, enforces the pre-boot / post-boot rules the real VMM has,
// and appends each call to a JSON-lines record (Call) the test reads back.
// It also behaves like a VM where snapshots are concerned:
//
//   - InstanceStart "boots" a guest: anonymous guest memory (two regions,
//     so region offsets matter) gets deterministic content, half of its
//     pages zero; the root drive's path_on_host must open.
//   - Every transition to running (boot, PATCH /vm Resumed, a load with
//     resume_vm) writes random data into some pages and zeroes others,
//     recording them as dirty, as a guest would.
//   - snapshot/create writes a State file (JSON: the drive path and network
//     device as Firecracker records them, plus a checksum of every page)
//     and a memory file: Full = all of memory, Diff = a sparse file holding
//     exactly the pages dirtied since the last snapshot or load, at their
//     offsets. Diff needs track_dirty_pages. Creating resets the dirty set.
//   - snapshot/load opens the recorded drive path (the real VMM reopens its
//     disks at the paths in the snapshot), applies network_overrides and
//     fills guest memory from the backend: File maps the memory file,
//     Uffd does Firecracker's side of the userfaultfd handshake (anonymous
//     regions registered with a userfaultfd, then the region list as JSON
//     plus the uffd over SCM_RIGHTS on backend_path) and then touches every
//     page in random order, so a page server must serve them all. Any page
//     whose bytes differ from the snapshotted ones fails the load (400,
//     naming the page). The Call's Note says what was verified and the
//     first line of the drive.
//
// Request bodies follow Firecracker's API (Apache-2.0,
// github.com/firecracker-microvm/firecracker, src/firecracker/swagger and
// docs/snapshotting); the State file format is this fake's own.
package fcfake

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"golang.org/x/sys/unix"

	"github.com/hearth-sandbox/hearth/internal/pagesrv"
)

const (
	envFake   = "HEARTH_FAKE_FIRECRACKER"
	envSpec   = "HEARTH_FAKE_FC_SPEC"
	envRecord = "HEARTH_FAKE_FC_RECORD"
	// envFailCreate names a file; while it exists snapshot/create fails
	// (with no side effects, as the real VMM documents).
	envFailCreate = "HEARTH_FAKE_FC_FAIL_CREATE"

	pageSize = 4096
	// StateFormat identifies the fake's state files.
	StateFormat = "hearth-fake-firecracker-1"
)

// Main turns this process into the fake if it was started as one (it then
// never returns). Call it first in TestMain.
func Main() {
	if os.Getenv(envFake) != "" {
		os.Exit(run(os.Args[1:]))
	}
}

// Env points the process environment at the fake (so the test binary,
// re-executed as "firecracker", becomes one) and returns the binary to give
// the driver, the call record and the flag file that makes snapshot/create
// fail while it exists. It skips the test without the spec. Not for
// parallel tests (t.Setenv).
func Env(t *testing.T) (binary, record, failCreate string) {
	t.Helper()
	spec, err := SpecPath()
	if err != nil {
		t.Skipf("needs the Firecracker API spec at ../shared/specs/firecracker/firecracker.yaml from the repo root: %v", err)
	}
	dir := t.TempDir()
	record = filepath.Join(dir, "calls.jsonl")
	failCreate = filepath.Join(dir, "fail-create")
	t.Setenv(envFake, "1")
	t.Setenv(envSpec, spec)
	t.Setenv(envRecord, record)
	t.Setenv(envFailCreate, failCreate)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe, record, failCreate
}

// Call is one recorded API request.
type Call struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
	Status int             `json:"status"`
	Error  string          `json:"error,omitempty"`
	// Note says what a boot, load or snapshot did (pages verified, the
	// drive's first line, the tap, the snapshot kind and pages written).
	Note string `json:"note,omitempty"`
	PID  int    `json:"pid"`
}

// ReadCalls returns the record; with strict, a rejected call fails t.
func ReadCalls(t testing.TB, record string, strict bool) []Call {
	t.Helper()
	b, err := os.ReadFile(record)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var calls []Call
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var c Call
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
	}
	if strict {
		for _, c := range calls {
			if c.Status != http.StatusNoContent {
				t.Errorf("%s %s rejected: %s (body %s)", c.Method, c.Path, c.Error, c.Body)
			}
		}
	}
	return calls
}

// Ops lists "METHOD /path" of calls.
func Ops(calls []Call) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = c.Method + " " + c.Path
	}
	return out
}

// SpecPath finds the Firecracker spec relative to the repo root.
func SpecPath() (string, error) {
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

// LoadRouter turns the swagger 2.0 spec into an OpenAPI 3 router.
func LoadRouter(path string) (routers.Router, error) {
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

// Validate checks one request against the spec.
func Validate(router routers.Router, r *http.Request, body []byte) error {
	req := r.Clone(r.Context())
	req.URL.Scheme, req.URL.Host = "http", "localhost"
	req.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("no such operation in the spec: %w", err)
	}
	return openapi3filter.ValidateRequest(r.Context(), &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true},
	})
}

// State is the fake's snapshot state file.
type State struct {
	Format     string `json:"format"`
	VCPUs      int    `json:"vcpus"`
	MemSizeMib int    `json:"mem_size_mib"`
	// DrivePath is the root drive's path_on_host, as Firecracker records it.
	DrivePath   string   `json:"drive_path,omitempty"`
	IfaceID     string   `json:"iface_id,omitempty"`
	HostDevName string   `json:"host_dev_name,omitempty"`
	MemSHA256   string   `json:"mem_sha256"`
	PageSums    []uint64 `json:"page_sums"` // FNV-64a of every 4 KiB page
	Epoch       int      `json:"epoch"`     // running periods so far
	Kind        string   `json:"kind"`      // Full | Diff
}

// ReadState reads a state file written by the fake.
func ReadState(path string) (State, error) {
	var st State
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", path, err)
	}
	if st.Format != StateFormat {
		return st, fmt.Errorf("%s: not a fake firecracker state file", path)
	}
	return st, nil
}

// MemSHA256 is the checksum State.MemSHA256 holds, for a memory image.
func MemSHA256(mem []byte) string {
	h := sha256.Sum256(mem)
	return hex.EncodeToString(h[:])
}

// machine is the API state machine plus the "guest".
type machine struct {
	router     routers.Router
	record     *os.File
	id         string
	failCreate string

	mu         sync.Mutex
	state      string // "Not started", "Running", "Paused"
	configured bool   // anything but logger/metrics set
	loaded     bool
	bootSource bool
	mc         struct {
		VCPUCount       int   `json:"vcpu_count"`
		MemSizeMib      int   `json:"mem_size_mib"`
		TrackDirtyPages *bool `json:"track_dirty_pages"`
	}
	track       bool
	drivePath   string
	ifaceID     string
	hostDevName string

	regions [][]byte // guest memory
	dirty   map[int]bool
	epoch   int
}

func (f *machine) pages() int {
	n := 0
	for _, r := range f.regions {
		n += len(r) / pageSize
	}
	return n
}

func (f *machine) page(i int) []byte {
	for _, r := range f.regions {
		if n := len(r) / pageSize; i < n {
			return r[i*pageSize : (i+1)*pageSize]
		} else {
			i -= n
		}
	}
	panic("page out of range")
}

// mapRegions maps size bytes of anonymous memory as two regions.
func mapRegions(size int) ([][]byte, error) {
	first := (size / pageSize / 2) * pageSize
	var out [][]byte
	for _, sz := range []int{first, size - first} {
		if sz == 0 {
			continue
		}
		m, err := unix.Mmap(-1, 0, sz, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func (f *machine) rng() *rand.Rand {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", f.id, f.epoch)
	return rand.New(rand.NewSource(int64(h.Sum64())))
}

// boot gives the guest its first memory content.
func (f *machine) boot() (string, error) {
	if !f.bootSource {
		return "", errors.New("cannot start microvm without a boot source")
	}
	mib := f.mc.MemSizeMib
	if mib == 0 {
		mib = 128
	}
	var err error
	if f.regions, err = mapRegions(mib << 20); err != nil {
		return "", err
	}
	f.track = f.mc.TrackDirtyPages != nil && *f.mc.TrackDirtyPages
	f.dirty = map[int]bool{}
	rng := f.rng()
	for i := range f.pages() {
		if rng.Intn(2) == 0 {
			rng.Read(f.page(i))
		}
		f.dirty[i] = true
	}
	disk, err := firstLine(f.drivePath)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("booted pages=%d disk=%q", f.pages(), disk), nil
}

// runPeriod is the guest running for a while: some pages get new data,
// some are zeroed.
func (f *machine) runPeriod() {
	f.epoch++
	rng := f.rng()
	n := f.pages()
	for range n/16 + 1 {
		i := rng.Intn(n)
		rng.Read(f.page(i))
		f.dirty[i] = true
	}
	for range n/64 + 1 {
		i := rng.Intn(n)
		clear(f.page(i))
		f.dirty[i] = true
	}
}

func pageSum(p []byte) uint64 {
	h := fnv.New64a()
	h.Write(p)
	return h.Sum64()
}

func firstLine(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open drive: %w", err)
	}
	defer fh.Close()
	line, err := bufio.NewReader(io.LimitReader(fh, 256)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read drive: %w", err)
	}
	return strings.TrimRight(line, "\n"), nil
}

func (f *machine) createSnapshot(body []byte) (string, error) {
	var p struct {
		SnapshotPath string `json:"snapshot_path"`
		MemFilePath  string `json:"mem_file_path"`
		SnapshotType string `json:"snapshot_type"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return "", err
	}
	if f.failCreate != "" {
		if _, err := os.Stat(f.failCreate); err == nil {
			return "", errors.New("injected snapshot/create failure")
		}
	}
	kind := p.SnapshotType
	if kind == "" {
		kind = "Full"
	}
	if kind == "Diff" && !f.track {
		return "", errors.New("diff snapshots need dirty page tracking (track_dirty_pages)")
	}
	n := f.pages()
	st := State{Format: StateFormat, VCPUs: f.mc.VCPUCount, MemSizeMib: n * pageSize >> 20, DrivePath: f.drivePath,
		IfaceID: f.ifaceID, HostDevName: f.hostDevName, PageSums: make([]uint64, n), Epoch: f.epoch, Kind: kind}
	h := sha256.New()
	mem, err := os.OpenFile(p.MemFilePath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	defer mem.Close()
	written := 0
	for i := range n {
		pg := f.page(i)
		h.Write(pg)
		st.PageSums[i] = pageSum(pg)
		if kind == "Full" || f.dirty[i] {
			if _, err := mem.WriteAt(pg, int64(i)*pageSize); err != nil {
				return "", err
			}
			written++
		}
	}
	if err := mem.Truncate(int64(n) * pageSize); err != nil {
		return "", err
	}
	if err := mem.Close(); err != nil {
		return "", err
	}
	st.MemSHA256 = hex.EncodeToString(h.Sum(nil))
	b, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(p.SnapshotPath, b, 0o600); err != nil {
		return "", err
	}
	f.dirty = map[int]bool{}
	return fmt.Sprintf("%s pages_written=%d epoch=%d sha256=%s", kind, written, f.epoch, st.MemSHA256), nil
}

func (f *machine) loadSnapshot(body []byte) (string, error) {
	var p struct {
		SnapshotPath string `json:"snapshot_path"`
		MemFilePath  string `json:"mem_file_path"`
		MemBackend   *struct {
			BackendType string `json:"backend_type"`
			BackendPath string `json:"backend_path"`
		} `json:"mem_backend"`
		TrackDirtyPages  bool `json:"track_dirty_pages"`
		NetworkOverrides []struct {
			IfaceID     string `json:"iface_id"`
			HostDevName string `json:"host_dev_name"`
		} `json:"network_overrides"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return "", err
	}
	if (p.MemFilePath == "") == (p.MemBackend == nil) {
		return "", errors.New("exactly one of mem_file_path and mem_backend is required")
	}
	st, err := ReadState(p.SnapshotPath)
	if err != nil {
		return "", err
	}
	// Devices first: the real VMM reopens the disk at the recorded path.
	disk, err := firstLine(st.DrivePath)
	if err != nil {
		return "", fmt.Errorf("restore block device %s: %w", st.DrivePath, err)
	}
	f.drivePath, f.ifaceID, f.hostDevName = st.DrivePath, st.IfaceID, st.HostDevName
	for _, o := range p.NetworkOverrides {
		if o.IfaceID != st.IfaceID {
			return "", fmt.Errorf("network override for unknown interface %q", o.IfaceID)
		}
		f.hostDevName = o.HostDevName
	}
	f.mc.VCPUCount, f.mc.MemSizeMib = st.VCPUs, st.MemSizeMib
	size := st.MemSizeMib << 20
	backend := "File"
	switch {
	case p.MemFilePath != "":
		err = f.mapFile(p.MemFilePath, size)
	case p.MemBackend.BackendType == "File":
		err = f.mapFile(p.MemBackend.BackendPath, size)
	default:
		backend = "Uffd"
		err = f.uffdHandshake(p.MemBackend.BackendPath, size)
	}
	if err != nil {
		return "", err
	}
	// Touch every page in random order (the guest would touch its working
	// set) and compare with the snapshot.
	n := f.pages()
	if n != len(st.PageSums) {
		return "", fmt.Errorf("memory has %d pages, state %d", n, len(st.PageSums))
	}
	order := rand.New(rand.NewSource(int64(n))).Perm(n)
	for _, i := range order {
		if got := pageSum(f.page(i)); got != st.PageSums[i] {
			return "", fmt.Errorf("guest memory page %d differs from the snapshot", i)
		}
	}
	h := sha256.New()
	for i := range n {
		h.Write(f.page(i))
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != st.MemSHA256 {
		return "", fmt.Errorf("guest memory sha256 %s, snapshot %s", sum, st.MemSHA256)
	}
	f.track = p.TrackDirtyPages
	f.dirty = map[int]bool{}
	f.epoch = st.Epoch
	return fmt.Sprintf("loaded backend=%s pages_verified=%d sha256=%s disk=%q tap=%s", backend, n, st.MemSHA256, disk, f.hostDevName), nil
}

func (f *machine) mapFile(path string, size int) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	m, err := unix.Mmap(int(fh.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	f.regions = [][]byte{m}
	return nil
}

// uffdHandshake is Firecracker's side of the Uffd backend: anonymous
// regions registered with a userfaultfd, then the region list and the
// uffd sent over the socket, which is then closed.
func (f *machine) uffdHandshake(sock string, size int) error {
	regions, err := mapRegions(size)
	if err != nil {
		return err
	}
	fd, err := pagesrv.OpenUserfaultfd()
	if err != nil {
		return fmt.Errorf("userfaultfd: %w", err)
	}
	defer unix.Close(fd) // the page server holds its own copy
	if _, err := pagesrv.EnableAPI(fd, 0); err != nil {
		return err
	}
	var mapping []pagesrv.Region
	var off uint64
	for _, r := range regions {
		base := uintptr(unsafe.Pointer(&r[0]))
		if err := pagesrv.RegisterMissing(fd, base, uintptr(len(r))); err != nil {
			return err
		}
		mapping = append(mapping, pagesrv.Region{BaseHostVirtAddr: uint64(base), Size: uint64(len(r)), Offset: off, PageSize: pageSize, PageSizeKiB: pageSize})
		off += uint64(len(r))
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("connect to the page server: %w", err)
	}
	defer c.Close()
	if err := pagesrv.SendHandshake(c, mapping, fd); err != nil {
		return err
	}
	f.regions = regions
	return nil
}

// rules enforces what real Firecracker refuses and performs the side
// effects of accepted calls.
func (f *machine) rules(r *http.Request, body []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	preBoot := func() error {
		if f.state != "Not started" {
			return errors.New("the requested operation is not supported after starting the microVM")
		}
		if f.loaded {
			return errors.New("cannot configure a microVM restored from a snapshot")
		}
		return nil
	}
	switch p := r.URL.Path; {
	case r.Method == http.MethodGet:
		return "", nil
	case p == "/logger" || p == "/metrics":
		return "", nil
	case p == "/snapshot/load":
		if f.configured || f.loaded {
			return "", errors.New("loading a snapshot is only allowed on a fresh process")
		}
		var v struct {
			ResumeVM bool `json:"resume_vm"`
		}
		_ = json.Unmarshal(body, &v)
		note, err := f.loadSnapshot(body)
		if err != nil {
			return "", err
		}
		f.loaded = true
		f.state = "Paused"
		if v.ResumeVM {
			f.state = "Running"
			f.runPeriod()
		}
		return note, nil
	case p == "/actions":
		if err := preBoot(); err != nil {
			return "", err
		}
		note, err := f.boot()
		if err != nil {
			return "", err
		}
		f.state = "Running"
		return note, nil
	case p == "/vm":
		if f.state == "Not started" {
			return "", errors.New("the microVM is not running")
		}
		var v struct {
			State string `json:"state"`
		}
		_ = json.Unmarshal(body, &v)
		if v.State == "Resumed" && f.state == "Paused" {
			f.state = "Running"
			f.runPeriod()
			return fmt.Sprintf("running epoch=%d", f.epoch), nil
		}
		if v.State == "Paused" {
			f.state = "Paused"
		}
		return "", nil
	case p == "/snapshot/create":
		if f.state != "Paused" {
			return "", errors.New("the microVM must be paused to create a snapshot")
		}
		return f.createSnapshot(body)
	default:
		if err := preBoot(); err != nil {
			return "", err
		}
		f.configured = true
		switch {
		case p == "/machine-config":
			_ = json.Unmarshal(body, &f.mc)
		case p == "/boot-source":
			f.bootSource = true
		case strings.HasPrefix(p, "/drives/"):
			var d struct {
				IsRoot bool   `json:"is_root_device"`
				Path   string `json:"path_on_host"`
			}
			_ = json.Unmarshal(body, &d)
			if d.IsRoot {
				f.drivePath = d.Path
			}
		case strings.HasPrefix(p, "/network-interfaces/"):
			var n struct {
				ID  string `json:"iface_id"`
				Dev string `json:"host_dev_name"`
			}
			_ = json.Unmarshal(body, &n)
			f.ifaceID, f.hostDevName = n.ID, n.Dev
		}
		return "", nil
	}
}

func (f *machine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c := Call{Method: r.Method, Path: r.URL.Path, Status: http.StatusNoContent, PID: os.Getpid()}
	if len(bytes.TrimSpace(body)) > 0 {
		c.Body = json.RawMessage(body)
	}
	err := Validate(f.router, r, body)
	if err == nil {
		c.Note, err = f.rules(r, body)
	}
	if err != nil {
		c.Status, c.Error = http.StatusBadRequest, err.Error()
	}
	// Health polls (GET /) are not interesting to record.
	if r.Method != http.MethodGet {
		line, _ := json.Marshal(c)
		// O_APPEND + one write per line: lines from concurrent fakes do not interleave.
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
		_ = json.NewEncoder(w).Encode(map[string]string{"app_name": "Firecracker", "id": f.id, "state": st, "vmm_version": "fake"})
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// run is the fake firecracker's main.
func run(args []string) int {
	var sock, id string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--api-sock":
			sock = args[i+1]
		case "--id":
			id = args[i+1]
		}
	}
	if sock == "" {
		fmt.Fprintln(os.Stderr, "fake firecracker: --api-sock required")
		return 2
	}
	router, err := LoadRouter(os.Getenv(envSpec))
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
	_ = http.Serve(ln, &machine{router: router, record: rec, id: id, state: "Not started", failCreate: os.Getenv(envFailCreate)})
	return 1
}
