package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/egress"
)

// iptables runs one iptables variant (nft or legacy) by argument list; no
// shell is ever involved. Which namespace a command acts on is the namespace
// of the calling thread (see inNS).
type iptables struct {
	bin     string // e.g. "iptables-nft"
	restore string // e.g. "iptables-nft-restore"
}

// detectIPTables picks the first variant whose nat and filter tables can be
// listed in the calling namespace. The distribution's default "iptables"
// comes first so hearth's rules live next to the host's own firewall.
func detectIPTables(ctx context.Context, want string) (*iptables, error) {
	cands := []string{"iptables", "iptables-nft", "iptables-legacy"}
	if want != "" {
		cands = []string{want}
	}
	var errs []error
	for _, bin := range cands {
		path, err := exec.LookPath(bin)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", bin, err))
			continue
		}
		restore, err := exec.LookPath(bin + "-restore")
		if err != nil {
			errs = append(errs, fmt.Errorf("%s-restore: %w", bin, err))
			continue
		}
		ipt := &iptables{bin: path, restore: restore}
		if _, err := ipt.run(ctx, "-t", "nat", "-S"); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := ipt.run(ctx, "-t", "filter", "-S"); err != nil {
			errs = append(errs, err)
			continue
		}
		return ipt, nil
	}
	return nil, fmt.Errorf("no working iptables (tried %s): install the iptables package and load nf_tables or ip_tables: %w",
		strings.Join(cands, ", "), errors.Join(errs...))
}

func (t *iptables) run(ctx context.Context, args ...string) (string, error) {
	// -w: wait for the xtables lock instead of failing when another
	// sandbox's setup holds it (the lock file is shared by all namespaces).
	cmd := exec.CommandContext(ctx, t.bin, append([]string{"-w"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", &cmdError{args: append([]string{t.bin}, args...), stderr: stderr.String(), err: err}
	}
	return stdout.String(), nil
}

// restoreRules feeds rules to iptables-restore. noflush keeps tables and
// chains that the input does not declare.
func (t *iptables) restoreRules(ctx context.Context, rules string, noflush bool) error {
	args := []string{"-w"}
	if noflush {
		args = append(args, "--noflush")
	}
	cmd := exec.CommandContext(ctx, t.restore, args...)
	cmd.Stdin = strings.NewReader(rules)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return &cmdError{args: append([]string{t.restore}, args...), stderr: stderr.String() + "\ninput:\n" + rules, err: err}
	}
	return nil
}

type cmdError struct {
	args   []string
	stderr string
	err    error
}

func (e *cmdError) Error() string {
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.args, " "), e.err, strings.TrimSpace(e.stderr))
}
func (e *cmdError) Unwrap() error { return e.err }

// slotRules is the whole ruleset of a sandbox namespace (the namespace is
// hearth's alone, so it is written in full, atomically). Credit: the
// DNAT/SNAT scheme follows Firecracker's "Network Connectivity for Clones"
// (Apache-2.0), extended with per-sandbox egress control.
//
//   - host → guest: packets to the slot address arriving on the veth are
//     DNATed to the guest and SNATed to the tap address, so the guest answers
//     on its own link whatever its routes are.
//   - guest → world: SNAT to the slot address; the root namespace then
//     MASQUERADEs the pool.
//   - guest → namespace: only the volume server's port (VolumeServerPort)
//     and replies; the rest is dropped (RedirectHTTPS adds the egress
//     proxy's port).
//   - namespace → world (the egress proxy's upstream connections): the
//     same egress chain as the guest's, so a proxied connection goes only
//     where the guest itself could.
//   - egress: the operator's chain (closed ranges, fixed for the slot's
//     life) sends what it lets through to the user chain, which SetPolicy
//     swaps atomically; replies to host-initiated connections bypass both.
func slotRules(slotAddr string, operator, user string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	fmt.Fprintf(&b, "-A PREROUTING -i %s -d %s/32 -j DNAT --to-destination %s\n", nsVethName, slotAddr, GuestIP)
	fmt.Fprintf(&b, "-A POSTROUTING -o %s -j SNAT --to-source %s\n", TapName, GatewayIP)
	fmt.Fprintf(&b, "-A POSTROUTING -o %s -s %s/32 -j SNAT --to-source %s\n", nsVethName, GuestIP, slotAddr)
	fmt.Fprintf(&b, "COMMIT\n")
	fmt.Fprintf(&b, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:%s - [0:0]\n:%s - [0:0]\n", egressChain, userChain)
	// The guest reaches the namespace itself only at its volume server.
	fmt.Fprintf(&b, "-A INPUT -i %s -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n", TapName)
	fmt.Fprintf(&b, "-A INPUT -i %s -d %s/32 -p tcp --dport %d -j ACCEPT\n", TapName, GatewayIP, VolumeServerPort)
	fmt.Fprintf(&b, "-A INPUT -i %s -j DROP\n", TapName)
	fmt.Fprintf(&b, "-A FORWARD -i %s -o %s -j ACCEPT\n", nsVethName, TapName)
	fmt.Fprintf(&b, "-A FORWARD -i %s -o %s -m conntrack --ctstate ESTABLISHED,RELATED --ctdir REPLY -j ACCEPT\n", TapName, nsVethName)
	fmt.Fprintf(&b, "-A FORWARD -i %s -o %s -j %s\n", TapName, nsVethName, egressChain)
	fmt.Fprintf(&b, "-A OUTPUT -o %s -p tcp -j %s\n", nsVethName, egressChain)
	b.WriteString(operator)
	b.WriteString(user)
	fmt.Fprintf(&b, "COMMIT\n")
	return b.String()
}

// redirectRules send the guest's HTTPS to the egress proxy (added with
// iptables-restore --noflush: the rules before them stay).
func redirectRules() string {
	return fmt.Sprintf("*nat\n-A PREROUTING -i %s -p tcp --dport 443 -j REDIRECT --to-ports %d\nCOMMIT\n"+
		"*filter\n-I INPUT 1 -i %s -d %s/32 -p tcp --dport %d -j ACCEPT\nCOMMIT\n",
		TapName, EgressProxyPort, TapName, GatewayIP, EgressProxyPort)
}

// operatorRules fill the egress chain: the slot pool (other sandboxes) is
// always closed; the operator's open ranges go on to the user chain before
// the closed ranges drop; everything else goes to the user chain.
func operatorRules(pool netip.Prefix, open []netip.Prefix) string {
	var b strings.Builder
	fmt.Fprintf(&b, "-A %s -d %s -j DROP\n", egressChain, pool)
	for _, p := range open {
		if p.Addr().Is4() {
			fmt.Fprintf(&b, "-A %s -d %s -j %s\n", egressChain, p, userChain)
		}
	}
	for _, p := range egress.Closed() {
		if p.Addr().Is4() {
			fmt.Fprintf(&b, "-A %s -d %s -j DROP\n", egressChain, p)
		}
	}
	fmt.Fprintf(&b, "-A %s -j %s\n", egressChain, userChain)
	return b.String()
}

// userRules fill the user chain from a policy: allowOut before denyOut
// (allow wins), then the internet verdict. IPv6 rules have nothing to act
// on: slots route IPv4 only.
func userRules(p egress.Policy) string {
	var b strings.Builder
	allow, deny := p.Prefixes()
	rule := func(pfx netip.Prefix, verdict string) {
		if !pfx.Addr().Is4() {
			return
		}
		if pfx.Bits() == 0 {
			fmt.Fprintf(&b, "-A %s -j %s\n", userChain, verdict)
			return
		}
		fmt.Fprintf(&b, "-A %s -d %s -j %s\n", userChain, pfx, verdict)
	}
	for _, x := range allow {
		rule(x, "ACCEPT")
	}
	for _, x := range deny {
		rule(x, "DROP")
	}
	fmt.Fprintf(&b, "-A %s -j %s\n", userChain, egressVerdict(p.AllowInternet))
	return b.String()
}

// userChainRules replaces only the user chain (iptables-restore --noflush
// flushes a declared chain and refills it in one transaction).
func userChainRules(p egress.Policy) string {
	return fmt.Sprintf("*filter\n:%s - [0:0]\n%sCOMMIT\n", userChain, userRules(p))
}

// parseUserChain reads a policy back from `iptables -S <userChain>` (an
// adopted slot); rules after the first unconditional verdict never match.
func parseUserChain(out string) egress.Policy {
	var p egress.Policy
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[0] != "-A" || f[1] != userChain {
			continue
		}
		verdict := f[len(f)-1]
		dst := ""
		if i := slices.Index(f, "-d"); i > 0 && i+1 < len(f) {
			dst = f[i+1]
		}
		switch {
		case dst == "":
			p.AllowInternet = verdict == "ACCEPT"
			return p
		case verdict == "ACCEPT":
			p.AllowOut = append(p.AllowOut, dst)
		default:
			p.DenyOut = append(p.DenyOut, dst)
		}
	}
	return p
}

func egressVerdict(allow bool) string {
	if allow {
		return "ACCEPT"
	}
	return "DROP"
}

// hostChains names the root-namespace chains owned by a Manager with the
// given interface prefix, e.g. "hth-" → HTH-FWD, HTH-IN, HTH-POST.
type hostChains struct{ fwd, in, post string }

func chainsFor(prefix string) hostChains {
	p := strings.ToUpper(strings.TrimRight(prefix, "-"))
	return hostChains{fwd: p + "-FWD", in: p + "-IN", post: p + "-POST"}
}

// hostRule is one rule of a hearth chain in the root namespace.
type hostRule struct {
	table, chain string
	args         []string
}

// hostRules is what the root namespace needs while at least one slot exists.
func (m *Manager) hostRules() (jumps, rules []hostRule) {
	c := chainsFor(m.cfg.Prefix)
	wild := m.cfg.Prefix + "+"
	jumps = []hostRule{
		{"filter", "FORWARD", []string{"-j", c.fwd}},
		{"filter", "INPUT", []string{"-j", c.in}},
		{"nat", "POSTROUTING", []string{"-j", c.post}},
	}
	rules = []hostRule{
		// No sandbox reaches another sandbox's slot.
		{"filter", c.fwd, []string{"-i", wild, "-o", wild, "-j", "DROP"}},
		{"filter", c.fwd, []string{"-i", wild, "-j", "ACCEPT"}},
		{"filter", c.fwd, []string{"-o", wild, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}},
		// Locally delivered traffic never passes POSTROUTING, so "not to a
		// slot" is exactly "leaves through an uplink", whichever it is.
		{"nat", c.post, []string{"-s", m.pool.String(), "!", "-o", wild, "-j", "MASQUERADE"}},
	}
	if !m.cfg.AllowHostAccess {
		rules = append(rules,
			hostRule{"filter", c.in, []string{"-i", wild, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}},
			hostRule{"filter", c.in, []string{"-i", wild, "-j", "DROP"}},
		)
	}
	return jumps, rules
}

// installHostRules (re)creates the hearth chains in the root namespace and
// the jumps to them; idempotent.
func (m *Manager) installHostRules(ctx context.Context) error {
	jumps, rules := m.hostRules()
	for _, j := range jumps {
		chain := j.args[len(j.args)-1]
		if _, err := m.ipt.run(ctx, "-t", j.table, "-N", chain); err != nil {
			if _, lerr := m.ipt.run(ctx, "-t", j.table, "-S", chain); lerr != nil {
				return err
			}
		}
		if _, err := m.ipt.run(ctx, "-t", j.table, "-F", chain); err != nil {
			return err
		}
	}
	for _, r := range rules {
		if _, err := m.ipt.run(ctx, append([]string{"-t", r.table, "-A", r.chain}, r.args...)...); err != nil {
			return err
		}
	}
	for _, j := range jumps {
		if _, err := m.ipt.run(ctx, append([]string{"-t", j.table, "-C", j.chain}, j.args...)...); err == nil {
			continue
		}
		if _, err := m.ipt.run(ctx, append([]string{"-t", j.table, "-I", j.chain, "1"}, j.args...)...); err != nil {
			return err
		}
	}
	return nil
}

// removeHostRules deletes the hearth chains and every jump to them; it
// succeeds when they are already gone.
func (m *Manager) removeHostRules(ctx context.Context) error {
	jumps, _ := m.hostRules()
	var errs []error
	for _, j := range jumps {
		for range 100 { // a crash loop may have left duplicates
			if _, err := m.ipt.run(ctx, append([]string{"-t", j.table, "-D", j.chain}, j.args...)...); err != nil {
				break
			}
		}
		chain := j.args[len(j.args)-1]
		if _, err := m.ipt.run(ctx, "-t", j.table, "-S", chain); err != nil {
			continue // chain absent
		}
		if _, err := m.ipt.run(ctx, "-t", j.table, "-F", chain); err != nil {
			errs = append(errs, err)
		}
		if _, err := m.ipt.run(ctx, "-t", j.table, "-X", chain); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// hostRuleLines lists the root-namespace rules that mention this Manager's
// chains or interfaces (for tests and diagnostics).
func (m *Manager) hostRuleLines(ctx context.Context) ([]string, error) {
	c := chainsFor(m.cfg.Prefix)
	var out []string
	for _, table := range []string{"filter", "nat"} {
		s, err := m.ipt.run(ctx, "-t", table, "-S")
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, c.fwd) || strings.Contains(l, c.in) || strings.Contains(l, c.post) || strings.Contains(l, m.cfg.Prefix) {
				out = append(out, table+": "+l)
			}
		}
	}
	return out, nil
}
