// Package netns gives every sandbox its own network slot: a named network
// namespace holding the VMM's tap device, joined to the host by a veth pair.
//
// Every guest has the same address (GuestIP, MAC GuestMAC) so memory
// snapshots stay valid on any slot; the namespace translates. Each slot owns
// a /30 of the pool (default 10.200.0.0/16): .1 is the host end of the veth,
// .2 the namespace end and the slot's host-reachable Address. Inside the
// namespace, traffic to Address is DNATed to the guest; guest traffic leaving
// is SNATed to Address and MASQUERADEd by the root namespace on whichever
// uplink routes it.
//
// Everything created here is named with Config.Prefix ("hth-"): namespaces
// /run/netns/<prefix><sandboxID>, host veths <prefix><slot index>, root
// iptables chains <PREFIX>-FWD/-IN/-POST. CleanupStale removes only such
// objects, never foreign ones.
//
// Host-wide changes made on first Setup: net.ipv4.ip_forward=1, /run/netns
// made a shared mount (as `ip netns add` does), and the jumps to hearth's
// chains at the top of FORWARD, INPUT and nat POSTROUTING. By default guests
// cannot open connections to the host itself (Config.AllowHostAccess).
package netns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hearth-sandbox/hearth/internal/egress"
)

// The guest side of every slot (shared with the image's init and the VMM).
const (
	GuestIP   = "169.254.0.21"
	GatewayIP = "169.254.0.22" // the tap, inside the sandbox namespace
	// VolumeServerPort is the one port of GatewayIP a guest reaches: its
	// host agent's NFS server for the sandbox's volumes (docs/volumes.md).
	// Everything else the guest sends to the namespace itself is dropped.
	VolumeServerPort = 2049
	// EgressProxyPort is where the namespace redirects a guest's HTTPS
	// (TCP 443) when its sandbox has egress header rules: the host
	// agent's egress proxy (docs/security.md).
	EgressProxyPort = 2443
	GuestMAC        = "02:fc:00:00:00:05"
	// TapMAC is the gateway's (the tap's) MAC, fixed like GuestMAC: a
	// restored guest's ARP cache holds the gateway's MAC from before the
	// snapshot, and the host never ARPs for the guest (its entry is
	// permanent), so a new random tap MAC would never be learnt and every
	// reply of a restored guest would go to a MAC that no longer exists.
	TapMAC = "02:fc:00:00:00:06"
	// TapName is the tap device in every sandbox namespace; being constant,
	// it is the same in a snapshot and in every restore of it.
	TapName     = "tap0"
	nsVethName  = "veth0"
	egressChain = "HEARTH-EGRESS"
	userChain   = "HEARTH-USER"
	netnsDir    = "/run/netns"
)

// Config configures a Manager. Zero values take the defaults.
type Config struct {
	// Prefix names every object the Manager creates (default "hth-"); at
	// most 8 characters of [a-z0-9-] so interface names fit IFNAMSIZ.
	Prefix string
	// Pool is split into /30 slots (default 10.200.0.0/16: 16384 slots).
	Pool netip.Prefix
	// IPTables forces a variant ("iptables-nft", "iptables-legacy");
	// empty probes iptables, iptables-nft, iptables-legacy in that order.
	IPTables string
	// AllowHostAccess lets guests open connections to the host's own
	// addresses; off by default so a sandbox cannot reach the agent.
	AllowHostAccess bool
	// OpenPrivate lists ranges of egress.Closed the operator opens to
	// sandboxes (--egress-allow-private); sandbox policies then apply to
	// them as to the internet. The slot pool stays closed regardless.
	OpenPrivate []netip.Prefix
	// NoEgressFilter forwards everything a guest sends (no closed ranges,
	// no per-sandbox policy; SetPolicy is refused): the behaviour before
	// the egress policy existed. No flag sets it; it is the baseline
	// against which the policy's cost is measured (BenchmarkVMCreatePolicy).
	NoEgressFilter bool
	Logger         *slog.Logger
}

// Options are per-sandbox settings.
type Options struct {
	Egress egress.Policy
}

// Slot is a sandbox's network.
type Slot struct {
	SandboxID     string
	Index         int
	Namespace     string // name under /run/netns
	NamespacePath string // /run/netns/<Namespace>, for the VMM (setns / jailer --netns)
	TapName       string // tap inside the namespace
	HostVeth      string // host end of the veth
	HostAddress   string // host end IP of the veth
	// Address reaches the guest from the host: http://<Address>:49983 is envd.
	Address   string
	GuestIP   string
	GatewayIP string
	GuestMAC  string
	Egress    egress.Policy
}

// Manager creates and removes network slots. Safe for concurrent use by
// different sandboxes; operations on the same sandbox ID must be serialized
// by the caller (the agent's per-sandbox state machine does).
type Manager struct {
	cfg  Config
	pool netip.Prefix
	ipt  *iptables
	log  *slog.Logger

	// mu guards alloc and slots; it is held only for bookkeeping, never
	// across netlink or iptables calls, so slots are built concurrently.
	mu    sync.Mutex
	alloc *allocator
	slots map[string]*Slot // by sandbox ID

	// hostMu serializes changes to the root namespace's shared hearth
	// chains and guards hostRefs (slots that need them). The chains exist
	// iff hostRefs > 0. Lock order: hostMu before mu.
	hostMu   sync.Mutex
	hostRefs int
}

var (
	prefixRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,7}$`)
	sandboxIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	// ErrNotFound is returned by Adopt when the sandbox has no slot.
	ErrNotFound = errors.New("network slot not found")
)

// NewManager checks the host (iptables variant) and returns a Manager with
// no slots; call Adopt for sandboxes that survived a restart, then
// CleanupStale.
func NewManager(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "hth-"
	}
	if !prefixRE.MatchString(cfg.Prefix) {
		return nil, fmt.Errorf("netns prefix %q: want 1-8 characters of [a-z0-9-] starting with a letter", cfg.Prefix)
	}
	if !cfg.Pool.IsValid() {
		cfg.Pool = netip.MustParsePrefix("10.200.0.0/16")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	alloc, err := newAllocator(cfg.Pool)
	if err != nil {
		return nil, err
	}
	ipt, err := detectIPTables(ctx, cfg.IPTables)
	if err != nil {
		return nil, err
	}
	cfg.Logger.Debug("netns: using iptables", "bin", ipt.bin)
	return &Manager{cfg: cfg, pool: alloc.pool, ipt: ipt, log: cfg.Logger, alloc: alloc, slots: map[string]*Slot{}}, nil
}

func (m *Manager) nsName(sandboxID string) string { return m.cfg.Prefix + sandboxID }
func (m *Manager) vethName(i int) string          { return m.cfg.Prefix + strconv.Itoa(i) }

func (m *Manager) slot(sandboxID string, i int, pol egress.Policy) *Slot {
	host, ns := m.alloc.addrs(i)
	name := m.nsName(sandboxID)
	return &Slot{
		SandboxID: sandboxID, Index: i,
		Namespace: name, NamespacePath: filepath.Join(netnsDir, name),
		TapName: TapName, HostVeth: m.vethName(i),
		HostAddress: host.String(), Address: ns.String(),
		GuestIP: GuestIP, GatewayIP: GatewayIP, GuestMAC: GuestMAC,
		Egress: pol,
	}
}

// Setup creates the network slot of sandboxID.
func (m *Manager) Setup(ctx context.Context, sandboxID string, opts Options) (_ Slot, err error) {
	if !sandboxIDRE.MatchString(sandboxID) {
		return Slot{}, fmt.Errorf("netns: invalid sandbox id %q", sandboxID)
	}
	m.mu.Lock()
	if _, ok := m.slots[sandboxID]; ok {
		m.mu.Unlock()
		return Slot{}, fmt.Errorf("netns: sandbox %s already has a slot", sandboxID)
	}
	idx, err := m.alloc.take()
	if err != nil {
		m.mu.Unlock()
		return Slot{}, err
	}
	m.mu.Unlock()
	s := m.slot(sandboxID, idx, opts.Egress)

	if err := m.acquireHost(ctx); err != nil {
		m.mu.Lock()
		m.alloc.release(idx)
		m.mu.Unlock()
		return Slot{}, err
	}
	defer func() {
		if err != nil {
			m.destroy(context.WithoutCancel(ctx), s.Namespace, s.HostVeth)
			m.releaseHost(context.WithoutCancel(ctx))
			m.mu.Lock()
			m.alloc.release(idx)
			m.mu.Unlock()
		}
	}()
	if err := m.build(ctx, s); err != nil {
		return Slot{}, fmt.Errorf("netns: setup %s: %w", sandboxID, err)
	}
	m.mu.Lock()
	m.slots[sandboxID] = s
	m.mu.Unlock()
	m.log.Info("netns: slot ready", "sandbox", sandboxID, "slot", idx, "address", s.Address, "internet", opts.Egress.AllowInternet,
		"allow_out", len(opts.Egress.AllowOut), "deny_out", len(opts.Egress.DenyOut))
	return *s, nil
}

func (m *Manager) build(ctx context.Context, s *Slot) error {
	if err := ensureNetnsDir(); err != nil {
		return err
	}
	ns, err := newNamedNS(s.Namespace)
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", s.Namespace, err)
	}
	defer ns.Close()

	hostAddr, slotAddr := netip.MustParseAddr(s.HostAddress), netip.MustParseAddr(s.Address)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: s.HostVeth},
		PeerName:      nsVethName,
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", s.HostVeth, err)
	}
	hostLink, err := netlink.LinkByName(s.HostVeth)
	if err != nil {
		return fmt.Errorf("veth %s: %w", s.HostVeth, err)
	}
	if err := netlink.AddrAdd(hostLink, &netlink.Addr{IPNet: ipnet(hostAddr, 30)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", hostAddr, s.HostVeth, err)
	}
	if err := netlink.LinkSetUp(hostLink); err != nil {
		return fmt.Errorf("up %s: %w", s.HostVeth, err)
	}

	// The tap must be created from a thread inside the namespace: a tun
	// device is born in the namespace of whoever opens /dev/net/tun.
	return inNS(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("up lo: %w", err)
		}
		peer, err := netlink.LinkByName(nsVethName)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(peer, &netlink.Addr{IPNet: ipnet(slotAddr, 30)}); err != nil {
			return fmt.Errorf("address %s on %s: %w", slotAddr, nsVethName, err)
		}
		if err := netlink.LinkSetUp(peer); err != nil {
			return fmt.Errorf("up %s: %w", nsVethName, err)
		}
		if err := netlink.RouteAdd(&netlink.Route{Gw: net.IP(hostAddr.AsSlice()), LinkIndex: peer.Attrs().Index}); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
		// IFF_NO_PI without IFF_VNET_HDR: QEMU and Firecracker set vnet_hdr
		// per queue when they attach, owner/group root.
		tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: TapName}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI}
		if err := netlink.LinkAdd(tap); err != nil {
			return fmt.Errorf("add tap %s: %w", TapName, err)
		}
		tapLink, err := netlink.LinkByName(TapName)
		if err != nil {
			return err
		}
		tapMAC, err := net.ParseMAC(TapMAC)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetHardwareAddr(tapLink, tapMAC); err != nil {
			return fmt.Errorf("mac of %s: %w", TapName, err)
		}
		if err := netlink.AddrAdd(tapLink, &netlink.Addr{IPNet: ipnet(netip.MustParseAddr(GatewayIP), 30)}); err != nil {
			return fmt.Errorf("address %s on %s: %w", GatewayIP, TapName, err)
		}
		if err := netlink.LinkSetUp(tapLink); err != nil {
			return fmt.Errorf("up %s: %w", TapName, err)
		}
		// The guest's MAC is fixed, so its ARP entry is too. Without it the
		// first packet to a booting guest starts ARP resolution, which the
		// guest cannot answer yet; the kernel retries only once a second
		// (retrans_time) and every queued SYN waits for that. Measured under
		// TCG: the first ARP left at VMM start, the retry ~1.4 s later, well
		// after envd listened; with the entry, create p50 2.2 s -> 1.75-1.85 s.
		mac, err := net.ParseMAC(GuestMAC)
		if err != nil {
			return err
		}
		if err := netlink.NeighSet(&netlink.Neigh{
			LinkIndex: tapLink.Attrs().Index, State: netlink.NUD_PERMANENT,
			IP: net.ParseIP(GuestIP), HardwareAddr: mac,
		}); err != nil {
			return fmt.Errorf("neighbour %s on %s: %w", GuestIP, TapName, err)
		}
		// /proc/sys/net is resolved against the opening thread's namespace.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("ip_forward in %s: %w", s.Namespace, err)
		}
		operator, user := operatorRules(m.pool, m.cfg.OpenPrivate), userRules(s.Egress)
		if m.cfg.NoEgressFilter {
			operator, user = fmt.Sprintf("-A %s -j ACCEPT\n", egressChain), ""
		}
		return m.ipt.restoreRules(ctx, slotRules(s.Address, operator, user), false)
	})
}

// acquireHost makes sure the root namespace is ready for one more slot.
func (m *Manager) acquireHost(ctx context.Context) error {
	m.hostMu.Lock()
	defer m.hostMu.Unlock()
	if m.hostRefs == 0 {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("netns: enable ip_forward: %w", err)
		}
		if err := m.installHostRules(ctx); err != nil {
			return fmt.Errorf("netns: host rules: %w", err)
		}
	}
	m.hostRefs++
	return nil
}

// releaseHost drops one slot's claim; the last one removes the chains.
func (m *Manager) releaseHost(ctx context.Context) {
	m.hostMu.Lock()
	defer m.hostMu.Unlock()
	if m.hostRefs == 0 {
		return
	}
	m.hostRefs--
	if m.hostRefs == 0 {
		if err := m.removeHostRules(ctx); err != nil {
			m.log.Warn("netns: removing host rules", "err", err)
		}
	}
}

// Teardown removes the slot of sandboxID; idempotent, and it also removes a
// slot this Manager does not know (left by a previous agent).
func (m *Manager) Teardown(ctx context.Context, sandboxID string) error {
	if !sandboxIDRE.MatchString(sandboxID) {
		return fmt.Errorf("netns: invalid sandbox id %q", sandboxID)
	}
	m.mu.Lock()
	s, known := m.slots[sandboxID]
	m.mu.Unlock()
	var err error
	if known {
		err = m.destroy(ctx, s.Namespace, s.HostVeth)
	} else {
		veth := ""
		if i, ierr := m.indexOf(m.nsName(sandboxID)); ierr == nil {
			veth = m.vethName(i)
		}
		err = m.destroy(ctx, m.nsName(sandboxID), veth)
	}
	if err != nil {
		return fmt.Errorf("netns: teardown %s: %w", sandboxID, err)
	}
	if known {
		m.mu.Lock()
		delete(m.slots, sandboxID)
		m.alloc.release(s.Index)
		m.mu.Unlock()
		m.releaseHost(ctx)
	}
	return nil
}

// destroy deletes a host veth (its peer goes with it) and a named namespace
// (the tap and the namespace's iptables die with it). Missing pieces are fine.
func (m *Manager) destroy(_ context.Context, nsName, veth string) error {
	var errs []error
	if veth != "" {
		if l, err := netlink.LinkByName(veth); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", veth, err))
			}
		}
	}
	p := filepath.Join(netnsDir, nsName)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RedirectHTTPS sends the guest's TCP connections to port 443 to the
// namespace's EgressProxyPort (the agent's egress proxy listens there on
// GatewayIP) and lets the guest reach that port. The rules live in the
// namespace, so an adopted slot keeps them; a new slot (resume) needs
// them again.
func (m *Manager) RedirectHTTPS(ctx context.Context, sandboxID string) error {
	_, err := m.restoreInSlot(ctx, sandboxID, redirectRules())
	if err != nil {
		return fmt.Errorf("netns: redirect https %s: %w", sandboxID, err)
	}
	return nil
}

// restoreInSlot feeds rules to iptables-restore --noflush in a known
// slot's namespace and returns the slot.
func (m *Manager) restoreInSlot(ctx context.Context, sandboxID, rules string) (*Slot, error) {
	m.mu.Lock()
	s, ok := m.slots[sandboxID]
	m.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	ns, err := netns.GetFromPath(s.NamespacePath)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s.NamespacePath, err)
	}
	defer ns.Close()
	return s, inNS(ns, func() error { return m.ipt.restoreRules(ctx, rules, true) })
}

// SetPolicy replaces the guest's egress policy in one transaction; host →
// guest traffic is unaffected. Packets of established guest connections
// that the new policy refuses stop at once (egress is checked per packet).
func (m *Manager) SetPolicy(ctx context.Context, sandboxID string, p egress.Policy) error {
	if m.cfg.NoEgressFilter {
		return errors.New("netns: egress filtering is off on this manager")
	}
	s, err := m.restoreInSlot(ctx, sandboxID, userChainRules(p))
	if err != nil {
		return fmt.Errorf("netns: set egress policy %s: %w", sandboxID, err)
	}
	m.mu.Lock()
	s.Egress = p
	m.mu.Unlock()
	return nil
}

// Get returns the slot of a sandbox this Manager set up or adopted.
func (m *Manager) Get(sandboxID string) (Slot, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.slots[sandboxID]
	if !ok {
		return Slot{}, false
	}
	return *s, true
}

// List returns the sandbox IDs that have a namespace on this host, whether
// or not this Manager knows them (after a restart: candidates for Adopt).
func (m *Manager) List() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutPrefix(e.Name(), m.cfg.Prefix); ok && sandboxIDRE.MatchString(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// indexOf reads the slot index of a namespace from its veth address.
func (m *Manager) indexOf(nsName string) (int, error) {
	ns, err := netns.GetFromPath(filepath.Join(netnsDir, nsName))
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	l, err := h.LinkByName(nsVethName)
	if err != nil {
		return 0, err
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return 0, err
	}
	for _, a := range addrs {
		if ad, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			if i, err := m.alloc.index(ad); err == nil {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: no slot address from pool %s on %s", nsName, m.pool, nsVethName)
}

// Adopt takes over the slot of a sandbox that survived an agent restart,
// after checking that its pieces are all there. memberPID, when not 0, is a
// process inside the sandbox's namespace (its VMM): when the name in
// /run/netns no longer holds the namespace (the agent that named it ran in
// a private mount namespace, as under `ip netns exec`, and took the bind
// mount with it), the name is bound to that process's namespace again.
func (m *Manager) Adopt(ctx context.Context, sandboxID string, memberPID int) (Slot, error) {
	if !sandboxIDRE.MatchString(sandboxID) {
		return Slot{}, fmt.Errorf("netns: invalid sandbox id %q", sandboxID)
	}
	name := m.nsName(sandboxID)
	if memberPID > 0 {
		if err := rebindName(name, memberPID); err != nil {
			return Slot{}, fmt.Errorf("netns: adopt %s: %w", sandboxID, err)
		}
	}
	idx, err := m.indexOf(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Slot{}, fmt.Errorf("netns: adopt %s: %w", sandboxID, ErrNotFound)
		}
		return Slot{}, fmt.Errorf("netns: adopt %s: %w", sandboxID, err)
	}
	if _, err := netlink.LinkByName(m.vethName(idx)); err != nil {
		return Slot{}, fmt.Errorf("netns: adopt %s: host veth %s: %w", sandboxID, m.vethName(idx), err)
	}
	ns, err := netns.GetFromPath(filepath.Join(netnsDir, name))
	if err != nil {
		return Slot{}, fmt.Errorf("netns: adopt %s: %w", sandboxID, err)
	}
	var rules string
	err = inNS(ns, func() error {
		var err error
		rules, err = m.ipt.run(ctx, "-t", "filter", "-S", userChain)
		return err
	})
	ns.Close()
	if err != nil {
		return Slot{}, fmt.Errorf("netns: adopt %s: egress rules: %w", sandboxID, err)
	}
	pol := parseUserChain(rules)

	m.mu.Lock()
	if _, ok := m.slots[sandboxID]; ok {
		s := *m.slots[sandboxID]
		m.mu.Unlock()
		return s, nil
	}
	if err := m.alloc.mark(idx); err != nil {
		m.mu.Unlock()
		return Slot{}, fmt.Errorf("netns: adopt %s: %w", sandboxID, err)
	}
	s := m.slot(sandboxID, idx, pol)
	m.slots[sandboxID] = s
	m.mu.Unlock()
	if err := m.acquireHost(ctx); err != nil {
		m.mu.Lock()
		delete(m.slots, sandboxID)
		m.alloc.release(idx)
		m.mu.Unlock()
		return Slot{}, err
	}
	return *s, nil
}

// CleanupStale removes every object with this Manager's prefix that does
// not belong to a slot it set up or adopted: namespaces, host veths, and
// the root chains when no slot is left. Run it at start-up after Adopt.
func (m *Manager) CleanupStale(ctx context.Context) error {
	m.mu.Lock()
	keepNS, keepLink := map[string]bool{}, map[string]bool{}
	for _, s := range m.slots {
		keepNS[s.Namespace], keepLink[s.HostVeth] = true, true
	}
	m.mu.Unlock()

	var errs []error
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), m.cfg.Prefix) || keepNS[e.Name()] {
			continue
		}
		m.log.Info("netns: removing stale namespace", "name", e.Name())
		if err := m.destroy(ctx, e.Name(), ""); err != nil {
			errs = append(errs, err)
		}
	}
	links, err := linkList()
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if !strings.HasPrefix(name, m.cfg.Prefix) || keepLink[name] {
			continue
		}
		m.log.Info("netns: removing stale link", "name", name)
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", name, err))
		}
	}
	m.hostMu.Lock()
	if m.hostRefs == 0 {
		err = m.removeHostRules(ctx)
	} else {
		err = m.installHostRules(ctx)
	}
	m.hostMu.Unlock()
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netns: cleanup: %w", err)
	}
	return nil
}

// linkList lists the root namespace's links, retrying dumps the kernel
// interrupted because links changed meanwhile (namespaces dying).
func linkList() ([]netlink.Link, error) {
	for range 10 {
		links, err := netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
	}
	return nil, fmt.Errorf("list links: %w", netlink.ErrDumpInterrupted)
}

func ipnet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, 32)}
}

// ensureNetnsDir makes /run/netns a shared mount point, as iproute2 does,
// so namespace bind mounts propagate into mount namespaces created later
// (e.g. a VMM's private mount namespace).
func ensureNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	// Not a mount point yet: bind it onto itself first.
	if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", netnsDir, err)
	}
	if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}
