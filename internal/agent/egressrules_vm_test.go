//go:build vm

package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/netns"
	"github.com/hearth-sandbox/hearth/internal/pki"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/testnet"
)

// guestHTTPS is run by the guest's python3: one HTTPS GET to ADDR:443
// with server name NAME, trusting the guest's system bundle (or nothing
// with "noverify"), sending an Authorization header of its own; it prints
// the response body (the upstream's echo of the request's headers).
const guestHTTPS = `
import socket, ssl, sys
addr, name, mode = sys.argv[1:4]
ctx = ssl.create_default_context()
if mode == "noverify":
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(socket.create_connection((addr, 443), timeout=60), server_hostname=name)
t.sendall(("GET /echo HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer guest\r\nConnection: close\r\n\r\n" % name).encode())
data = b""
while True:
    c = t.recv(65536)
    if not c:
        break
    data += c
sys.stdout.write(data.decode().split("\r\n\r\n", 1)[1])
`

// TestVMEgressRules: a real guest's HTTPS to a rule's domain reaches an
// HTTPS server outside the host (a testnet node, opened like
// --egress-allow-private) with the rule's header, resolved on the host;
// the secret is nowhere in the guest; a name without a rule is spliced
// untouched; the proxy comes back after pause and resume.
func TestVMEgressRules(t *testing.T) {
	tn := testnet.Setup(t, 1)
	node := tn.Nodes[0]

	upCA, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "upstream-ca"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := upCA.IssueServer(time.Hour, "api.example.com", "plain.example.net")
	if err != nil {
		t.Fatal(err)
	}
	l, err := node.Listen(443)
	if err != nil {
		t.Fatal(err)
	}
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(r.Header)
	})}
	go func() { _ = up.Serve(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}})) }()
	t.Cleanup(func() { _ = up.Close() })

	const secret = "s3cret-value-9f2c"
	netCfg := netns.Config{Prefix: e2eNetPrefix, Pool: e2eNetPool, OpenPrivate: []netip.Prefix{tn.Subnet}}
	e := newVMEnvWith(t, func(o *Options) {
		nm, err := netns.NewManager(context.Background(), netCfg)
		if err != nil {
			t.Fatal(err)
		}
		o.Net = netAdapter{nm}
		o.EgressRoots = upCA.Pool()
	}, "base")
	e.netCfg = netCfg
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := e.client
	const id = "vmegress1"
	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: id, TemplateID: "base", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 512, AccessToken: "tok-" + id, Egress: egress.Open(),
		EgressRules: []egress.HeaderRule{{Domain: "*.example.com", Headers: map[string]string{"Authorization": "Bearer " + secret}}},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.DestroySandbox(context.Background(), id) })

	get := func(t *testing.T, name, mode string) http.Header {
		t.Helper()
		res, err := c.Exec(ctx, id, service.ExecRequest{Cmd: "python3", Args: []string{"-c", guestHTTPS, node.Addr.String(), name, mode}})
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode != 0 {
			t.Fatalf("guest HTTPS to %s: exit %d: %s %s", name, res.ExitCode, res.Stdout, res.Stderr)
		}
		var h http.Header
		if err := json.Unmarshal([]byte(res.Stdout), &h); err != nil {
			t.Fatalf("upstream echo %q: %v", res.Stdout, err)
		}
		return h
	}
	check := func(t *testing.T) {
		// Verified by the guest's system bundle, which now holds the
		// agent's egress CA: the proxy answered, and forwarded with the
		// secret in place of the guest's header.
		if got := get(t, "api.example.com", "verify")["Authorization"]; len(got) != 1 || got[0] != "Bearer "+secret {
			t.Errorf("upstream saw Authorization %q, want exactly the secret", got)
		}
		// No rule: spliced to the upstream, whose certificate the guest
		// does not trust (hence noverify), header untouched.
		if got := get(t, "plain.example.net", "noverify")["Authorization"]; len(got) != 1 || got[0] != "Bearer guest" {
			t.Errorf("spliced request: upstream saw Authorization %q, want the guest's", got)
		}
	}
	t.Run("rule applies", check)

	t.Run("secret not in the guest", func(t *testing.T) {
		// The pattern is split in the command line so that only a leak
		// can match it.
		half := len(secret) / 2
		pat := `"` + secret[:half] + `""` + secret[half:] + `"`
		res, err := c.Exec(ctx, id, service.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c",
			"env; echo ---; grep -rlsF " + pat + " /etc /usr/local /root /home /tmp /run /var/tmp; echo ---; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -cF " + pat + " || true"}})
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(res.Stdout, "---\n")
		if strings.Contains(res.Stdout, secret) || len(parts) != 3 || strings.TrimSpace(parts[1]) != "" || strings.TrimSpace(parts[2]) != "0" {
			t.Errorf("the secret is visible in the guest (env, files, process environments):\n%s", res.Stdout)
		}
		if !strings.Contains(res.Stdout, "NODE_EXTRA_CA_CERTS="+guestCAPath) {
			t.Errorf("NODE_EXTRA_CA_CERTS not in the guest's env:\n%s", res.Stdout)
		}
	})

	t.Run("after pause and resume", func(t *testing.T) {
		if err := c.PauseSandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id, Egress: egress.Open()}); err != nil {
			t.Fatal(err)
		}
		check(t)
		res, err := c.Exec(ctx, id, service.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "grep -c 'BEGIN CERTIFICATE' " + guestCAPath + "; grep -cF \"$(sed -n 2p " + guestCAPath + ")\" " + guestCABundle}})
		if err != nil || strings.Fields(res.Stdout)[0] != "1" || strings.Fields(res.Stdout)[1] != "1" {
			t.Errorf("CA in the guest after resume: %q %v (want it once in the bundle)", res.Stdout, err)
		}
	})

	t.Run("after an agent restart", func(t *testing.T) {
		// The agent's shutdown pauses the sandbox and the next agent
		// resumes it at start-up with the rules it reads from egress.json.
		e.restart(t)
		c = e.client
		deadline := time.Now().Add(3 * time.Minute)
		for {
			rt, err := c.ListSandboxes(ctx)
			if err == nil && len(rt) == 1 && rt[0].State == string(sbx.StateRunning) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sandbox not running after the restart: %+v %v", rt, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		check(t)
	})

	// A crash: the new agent re-adopts the running VM and its slot (whose
	// redirect rules are still there) and starts a new proxy with the
	// rules from egress.json.
	a2, c2 := e.crashAndRestart(t, ctx, id)
	t.Cleanup(func() { _ = a2.Close() })
	e.agent, c = a2, c2
	t.Run("after an agent crash", func(t *testing.T) {
		check(t)
		if out, err := exec.Command("ip", "netns", "exec", e2eNetPrefix+id, "iptables", "-w", "-t", "nat", "-S", "PREROUTING").CombinedOutput(); err != nil ||
			strings.Count(string(out), "--to-ports 2443") != 1 {
			t.Errorf("redirect rules after re-adoption: %s %v (want exactly one)", out, err)
		}
	})

	t.Run("denied by the egress policy", func(t *testing.T) {
		// The proxy's upstream dial obeys the sandbox's policy: with the
		// node denied, a rule's request gets no answer from it.
		pol, err := egress.New(true, nil, []string{node.Addr.String()})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.UpdateSandboxNetwork(ctx, id, pol); err != nil {
			t.Fatal(err)
		}
		res, err := c.Exec(ctx, id, service.ExecRequest{Cmd: "python3", Args: []string{"-c", guestHTTPS, node.Addr.String(), "api.example.com", "verify"}})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(res.Stdout, secret) || !strings.Contains(res.Stdout, "hearth egress proxy") {
			t.Errorf("request through a denied destination: %q %q, want the proxy's 502", res.Stdout, res.Stderr)
		}
	})
}
