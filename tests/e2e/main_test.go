//go:build vm

// Package e2e boots real microVMs (QEMU, TCG here) through hearth's public
// REST API, with the whole stack in this process (internal/devstack, as
// `hearth dev` runs it). It needs root and guest images built by
// `hearth image build --data-dir $HEARTH_IMAGES_DIR`; scripts/test.sh
// provides both.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/devstack"
	"github.com/hearth-sandbox/hearth/internal/image"
	"github.com/hearth-sandbox/hearth/internal/testnet"
)

// stack is shared by the package's tests: one control plane + agent, many
// sandboxes, as a real deployment would be.
var stack *devstack.Stack

// egressNet holds the listeners of the egress tests (nil: unsupported).
var egressNet *testnet.Net

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	images := os.Getenv("HEARTH_IMAGES_DIR")
	if images == "" {
		fmt.Println("SKIP tests/e2e: set HEARTH_IMAGES_DIR to a data dir with built images (hearth image build --data-dir DIR)")
		return 0
	}
	if _, err := os.Stat(image.KernelPath(images)); err != nil {
		fmt.Printf("SKIP tests/e2e: no guest kernel in %s: run hearth image build --data-dir %s\n", images, images)
		return 0
	}
	if os.Geteuid() != 0 {
		fmt.Println("SKIP tests/e2e: needs root (network namespaces, tap and loop devices)")
		return 0
	}
	dir, err := os.MkdirTemp("", "hearth-e2e-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(dir)

	cfg := config.Default()
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:0"
	cfg.ReapEvery = 500 * time.Millisecond
	level := slog.LevelWarn
	if os.Getenv("HEARTH_E2E_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx := context.Background()
	// The egress tests need private addresses outside the stack: node 0's
	// address is opened by the operator, node 1's stays closed.
	opts := devstack.Options{Config: cfg, ImagesFrom: images, Logger: log}
	if testnet.Unsupported() == "" {
		if egressNet, err = testnet.New(2); err != nil {
			fmt.Println("test network:", err)
			return 1
		}
		defer egressNet.Close()
		opts.AgentOptions.EgressAllowPrivate = []netip.Prefix{netip.PrefixFrom(egressNet.Nodes[0].Addr, 32)}
	}
	stack, err = devstack.Start(ctx, opts)
	if err != nil {
		fmt.Println("start dev stack:", err)
		return 1
	}
	code := m.Run()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := stack.Close(cctx); err != nil {
		fmt.Println("close dev stack:", err)
		code = 1
	}
	// The xfs pool of the data dir is mounted; unmount before removal.
	_ = unmountUnder(dir)
	return code
}

// api is a tiny JSON client for the /v1 API, authenticated by API key.
type api struct {
	t   testing.TB
	key string
}

func newAPI(t testing.TB) *api { return &api{t: t, key: stack.Credentials.APIKey} }

// do sends a request and decodes a JSON answer into out (when non-nil); it
// returns the status code.
func (a *api) do(method, path string, body any, out any) int {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, stack.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", a.key)
	if _, raw := body.([]byte); raw {
		req.Header.Set("Content-Type", "application/octet-stream")
	} else if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	if out != nil {
		if p, ok := out.(*[]byte); ok {
			*p = data
		} else if len(data) > 0 {
			if err := json.Unmarshal(data, out); err != nil {
				a.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
			}
		}
	}
	return resp.StatusCode
}

type sandbox struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	DiskSizeMB  int    `json:"disk_size_mb"`
	VCPUs       int    `json:"vcpus"`
	MemoryMB    int    `json:"memory_mb"`
	AccessToken string `json:"envd_access_token"`
}

type execResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
}

// create makes a sandbox and registers its destruction.
func (a *api) create(req map[string]any) sandbox {
	a.t.Helper()
	var sb sandbox
	if code := a.do("POST", "/v1/sandboxes", req, &sb); code != http.StatusCreated {
		var raw []byte
		a.t.Fatalf("create %v: status %d %s", req, code, raw)
	}
	a.t.Cleanup(func() { a.do("DELETE", "/v1/sandboxes/"+sb.ID, nil, nil) })
	return sb
}

func (a *api) exec(id, cmd string, args ...string) execResult {
	a.t.Helper()
	var r execResult
	if code := a.do("POST", "/v1/sandboxes/"+id+"/exec", map[string]any{"cmd": cmd, "args": args}, &r); code != http.StatusOK {
		a.t.Fatalf("exec %s %v: status %d", cmd, args, code)
	}
	return r
}

func unmountUnder(dir string) error {
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	for _, line := range bytes.Split(mounts, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) > 1 && bytes.HasPrefix(f[1], []byte(filepath.Clean(dir)+"/")) {
			_ = unmount(string(f[1]))
		}
	}
	return nil
}
