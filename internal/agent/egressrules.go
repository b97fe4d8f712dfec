package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/egressproxy"
	"github.com/hearth-sandbox/hearth/internal/netns"
	"github.com/hearth-sandbox/hearth/internal/pki"
)

// Egress header rules (E2B's network.rules, docs/security.md): a sandbox
// with rules gets an egress proxy of this agent listening in its network
// namespace, where the guest's HTTPS is redirected; the proxy sets the
// rules' headers (resolved secrets) on requests to the rules' domains.
// The values stay on the host: in this process and, for crash recovery,
// in DATA/sandboxes/<id>/egress.json (0600 in the 0700 run dir, like
// envd.json). The guest gets only the CA certificate of this agent's
// egress CA (DATA/egress-ca, key 0600), installed at create and resume.

// HTTPSRedirector is implemented by networks that can send a slot's guest
// HTTPS to the egress proxy's port (netns.Manager.RedirectHTTPS).
type HTTPSRedirector interface {
	RedirectHTTPS(ctx context.Context, sandboxID string) error
}

const egressRulesFile = "egress.json"

const egressDialTimeout = 30 * time.Second

// Where the guest finds the egress CA: the Debian layout that
// update-ca-certificates, curl, OpenSSL and Python read.
const (
	guestCAPath     = "/usr/local/share/ca-certificates/hearth-egress.crt"
	guestCABundle   = "/etc/ssl/certs/ca-certificates.crt"
	nodeExtraCAVar  = "NODE_EXTRA_CA_CERTS"
	egressCADirName = "egress-ca"
)

var egressProxyAddr = netip.AddrPortFrom(netip.MustParseAddr(netns.GatewayIP), netns.EgressProxyPort)

// egressCA is this agent's egress CA, created on first use.
func (m *Manager) egressCA() (*pki.CA, error) {
	m.caMu.Lock()
	defer m.caMu.Unlock()
	if m.ca != nil {
		return m.ca, nil
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(m.d.DataDir, egressCADirName))
	if err != nil {
		return nil, fmt.Errorf("egress CA: %w", err)
	}
	m.ca = ca
	return ca, nil
}

func writeEgressRules(dir string, rules []egress.HeaderRule) error {
	b, err := json.Marshal(rules)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, egressRulesFile), b) // 0600 (CreateTemp)
}

// readEgressRules reads a sandbox's rules back (none: nil).
func readEgressRules(dir string) ([]egress.HeaderRule, error) {
	b, err := os.ReadFile(filepath.Join(dir, egressRulesFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rules []egress.HeaderRule
	return rules, json.Unmarshal(b, &rules)
}

// startEgress starts sb's egress proxy in slot's namespace before the
// guest runs. redirect adds the namespace's redirect rules (a new slot;
// an adopted one has them).
func (m *Manager) startEgress(ctx context.Context, sb *sandbox, slot NetSlot, redirect bool) error {
	rules := sb.spec.EgressRules
	if len(rules) == 0 {
		return nil
	}
	r, ok := m.d.Net.(HTTPSRedirector)
	if !ok || slot.NSPath == "" {
		return fmt.Errorf("egress rules: %w: the network cannot redirect a guest's HTTPS", ErrUnimplemented)
	}
	ca, err := m.egressCA()
	if err != nil {
		return err
	}
	if err := writeEgressRules(sb.runDir, rules); err != nil {
		return fmt.Errorf("egress rules: %w", err)
	}
	if redirect {
		if err := r.RedirectHTTPS(ctx, sb.spec.ID); err != nil {
			return fmt.Errorf("egress rules: %w", err)
		}
	}
	l, err := netns.ListenTCP(slot.NSPath, egressProxyAddr.String())
	if err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	nsPath := slot.NSPath
	p, err := egressproxy.Serve(l, egressproxy.Config{
		Rules: rules,
		CA:    ca,
		Dial: func(ctx context.Context, _, addr string) (net.Conn, error) {
			// A destination the policy drops never answers.
			ctx, cancel := context.WithTimeout(ctx, egressDialTimeout)
			defer cancel()
			return netns.DialTCP(ctx, nsPath, addr)
		},
		RootCAs: m.d.EgressRoots,
		Logger:  sb.log,
	})
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("egress proxy: %w", err)
	}
	sb.mu.Lock()
	sb.egressProxy = p
	sb.mu.Unlock()
	return nil
}

// stopEgress stops sb's egress proxy, if it runs.
func (m *Manager) stopEgress(sb *sandbox) {
	sb.mu.Lock()
	p := sb.egressProxy
	sb.egressProxy = nil
	sb.mu.Unlock()
	if p != nil {
		p.Stop()
	}
}

// egressEnv is the guest's default environment: the sandbox's, plus
// NODE_EXTRA_CA_CERTS (Node.js reads no system bundle) with rules.
func egressEnv(spec Spec) map[string]string {
	if len(spec.EgressRules) == 0 {
		return spec.Env
	}
	env := map[string]string{nodeExtraCAVar: guestCAPath}
	for k, v := range spec.Env {
		env[k] = v
	}
	return env
}

// trustEgressCA installs the egress CA certificate in the guest (its key
// and the rules' values never go there): as its own file and appended
// once to the system bundle, which most TLS clients read directly.
func (m *Manager) trustEgressCA(ctx context.Context, sb *sandbox, e Envd) error {
	if len(sb.spec.EgressRules) == 0 {
		return nil
	}
	ca, err := m.egressCA()
	if err != nil {
		return err
	}
	if err := e.WriteFile(ctx, guestCAPath, "root", bytes.NewReader(ca.CertPEM())); err != nil {
		return fmt.Errorf("egress CA into the guest: %w", err)
	}
	// The script is constant; the certificate's first base64 line tells
	// whether the bundle has it (a resumed guest's does).
	script := `set -e; c="$1"; b="$2"; mkdir -p "$(dirname "$b")"; touch "$b"
if ! grep -qF "$(sed -n 2p "$c")" "$b"; then cat "$c" >> "$b"; fi`
	var out bytes.Buffer
	res, err := e.Exec(ctx, ExecSpec{Cmd: "/bin/sh", Args: []string{"-c", script, "sh", guestCAPath, guestCABundle}, User: "root"},
		func(_ Stream, p []byte) error { out.Write(p); return nil })
	if err != nil {
		return fmt.Errorf("egress CA into the guest's bundle: %w", err)
	}
	if res.Code != 0 {
		return fmt.Errorf("egress CA into the guest's bundle: exit %s: %s", strconv.Itoa(res.Code), out.String())
	}
	return nil
}
