package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hearth-sandbox/hearth/internal/egress"
)

func TestAllocator(t *testing.T) {
	t.Parallel()
	a, err := newAllocator(netip.MustParsePrefix("10.200.0.0/28"))
	if err != nil {
		t.Fatal(err)
	}
	for want := range 4 {
		i, err := a.take()
		if err != nil || i != want {
			t.Fatalf("take = %d, %v; want %d", i, err, want)
		}
	}
	if _, err := a.take(); err == nil {
		t.Fatal("take from a full /28 succeeded")
	}
	a.release(2)
	if i, _ := a.take(); i != 2 {
		t.Fatalf("take after release = %d, want 2", i)
	}
	host, ns := a.addrs(3)
	if host.String() != "10.200.0.13" || ns.String() != "10.200.0.14" {
		t.Fatalf("addrs(3) = %s, %s", host, ns)
	}
	if i, err := a.index(ns); err != nil || i != 3 {
		t.Fatalf("index(%s) = %d, %v", ns, i, err)
	}
	if _, err := a.index(host); err == nil {
		t.Fatal("index of a host address succeeded")
	}
	if err := a.mark(3); err == nil {
		t.Fatal("mark of a used index succeeded")
	}
	for _, p := range []string{"10.0.0.0/31", "fd00::/64", "10.0.0.0/8"} {
		if _, err := newAllocator(netip.MustParsePrefix(p)); err == nil {
			t.Errorf("newAllocator(%s) succeeded", p)
		}
	}
}

func TestSlotRulesShape(t *testing.T) {
	t.Parallel()
	pool := netip.MustParsePrefix("10.200.0.0/16")
	pol, err := egress.New(false, []string{"8.8.8.8"}, []string{"1.0.0.0/8", "fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	r := slotRules("10.200.0.2", operatorRules(pool, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}), userRules(pol))
	for _, want := range []string{
		"-A PREROUTING -i veth0 -d 10.200.0.2/32 -j DNAT --to-destination 169.254.0.21",
		"-A POSTROUTING -o veth0 -s 169.254.0.21/32 -j SNAT --to-source 10.200.0.2",
		":FORWARD DROP",
		"-A OUTPUT -o veth0 -p tcp -j HEARTH-EGRESS\n",
		"-A INPUT -i tap0 -d 169.254.0.22/32 -p tcp --dport 2049 -j ACCEPT\n-A INPUT -i tap0 -j DROP\n",
		// Order matters: pool, operator-opened, closed, user chain.
		"-A HEARTH-EGRESS -d 10.200.0.0/16 -j DROP\n-A HEARTH-EGRESS -d 10.1.0.0/16 -j HEARTH-USER\n-A HEARTH-EGRESS -d 0.0.0.0/8 -j DROP\n",
		"-A HEARTH-EGRESS -d 169.254.0.0/16 -j DROP\n",
		"-A HEARTH-EGRESS -j HEARTH-USER\n-A HEARTH-USER -d 8.8.8.8/32 -j ACCEPT\n-A HEARTH-USER -d 1.0.0.0/8 -j DROP\n-A HEARTH-USER -j DROP\nCOMMIT",
	} {
		if !strings.Contains(r, want) {
			t.Errorf("slot rules lack %q:\n%s", want, r)
		}
	}
	if strings.Contains(r, "fd00") {
		t.Errorf("IPv6 rule in the IPv4 ruleset:\n%s", r)
	}
	if got := userChainRules(egress.Open()); !strings.Contains(got, ":HEARTH-USER - [0:0]\n-A HEARTH-USER -j ACCEPT\nCOMMIT") {
		t.Errorf("userChainRules(open) = %q", got)
	}
}

// --- real namespaces (root) ---

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netns: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); run the tests as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("netns: needs /dev/net/tun: %v; load the tun module", err)
	}
}

// testConfig picks a prefix and a /24 pool no other run and no host route
// uses, so tests never touch a real agent's "hth-" objects.
func testConfig(t *testing.T) Config {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		pool := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(201 + rand.IntN(50)), byte(rand.IntN(256)), 0}), 24)
		clash := slices.ContainsFunc(routes, func(r netlink.Route) bool {
			if r.Dst == nil {
				return false
			}
			a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			ones, _ := r.Dst.Mask.Size()
			if ones == 0 {
				return false // default route
			}
			return netip.PrefixFrom(a, ones).Overlaps(pool)
		})
		if !clash {
			return Config{Prefix: fmt.Sprintf("hx%d-", 100+rand.IntN(900)), Pool: pool}
		}
	}
	t.Fatal("no free test pool")
	return Config{}
}

func newTestManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := NewManager(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever a test left, a fresh Manager removes it.
		fresh, err := NewManager(context.Background(), cfg)
		if err == nil {
			err = fresh.CleanupStale(context.Background())
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return m
}

// footprint lists everything with the manager's prefix on the host.
func footprint(t *testing.T, m *Manager) []string {
	t.Helper()
	var out []string
	ents, _ := os.ReadDir(netnsDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), m.cfg.Prefix) {
			out = append(out, "netns "+e.Name())
		}
	}
	links, err := linkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, m.cfg.Prefix) {
			out = append(out, "link "+l.Attrs().Name)
		}
	}
	rules, err := m.hostRuleLines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return append(out, rules...)
}

// inTestNS runs fn in ns (see inNS) and fails the test on error.
func inTestNS(t *testing.T, ns netns.NsHandle, fn func() error) {
	t.Helper()
	if err := inNS(ns, fn); err != nil {
		t.Fatal(err)
	}
}

// fakeGuest stands in for the VM: the slot's tap is replaced by a veth of
// the same name whose peer, in a new namespace, has the guest's address and
// default route. The slot's iptables rules name the tap, so they apply
// unchanged.
func fakeGuest(t *testing.T, s Slot) netns.NsHandle {
	t.Helper()
	guest := newAnonNS(t)
	slotNS, err := netns.GetFromPath(s.NamespacePath)
	if err != nil {
		t.Fatal(err)
	}
	defer slotNS.Close()
	inTestNS(t, slotNS, func() error {
		tap, err := netlink.LinkByName(s.TapName)
		if err != nil {
			return err
		}
		tt, ok := tap.(*netlink.Tuntap)
		if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.Flags&netlink.TUNTAP_NO_PI == 0 || tt.Flags&netlink.TUNTAP_VNET_HDR != 0 {
			return fmt.Errorf("%s is %#v, want a tap with IFF_NO_PI and no vnet_hdr", s.TapName, tap)
		}
		// The tap's MAC is fixed (restored guests keep the gateway's MAC in
		// their ARP cache) and the guest's fixed MAC is pre-resolved (no
		// ARP wait while it boots).
		if got := tap.Attrs().HardwareAddr.String(); got != TapMAC {
			return fmt.Errorf("%s MAC %s, want the fixed %s", s.TapName, got, TapMAC)
		}
		neighs, err := netlink.NeighList(tap.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		found := false
		for _, n := range neighs {
			found = found || (n.IP.String() == GuestIP && n.HardwareAddr.String() == GuestMAC && n.State == netlink.NUD_PERMANENT)
		}
		if !found {
			return fmt.Errorf("no permanent neighbour %s %s on %s: %v", GuestIP, GuestMAC, s.TapName, neighs)
		}
		if err := netlink.LinkDel(tap); err != nil {
			return err
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: s.TapName}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(guest))}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		l, err := netlink.LinkByName(s.TapName)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipnet(netip.MustParseAddr(GatewayIP), 30)}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	inTestNS(t, guest, func() error {
		for _, n := range []string{"lo", "eth0"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		eth, _ := netlink.LinkByName("eth0")
		if err := netlink.AddrAdd(eth, &netlink.Addr{IPNet: ipnet(netip.MustParseAddr(GuestIP), 30)}); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP(GatewayIP), LinkIndex: eth.Attrs().Index})
	})
	return guest
}

// newAnonNS makes an unnamed namespace that lives as long as the test.
func newAnonNS(t *testing.T) netns.NsHandle {
	t.Helper()
	c := make(chan netns.NsHandle, 1)
	e := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // thread discarded: it stays in the new ns
		h, err := netns.New()
		c <- h
		e <- err
	}()
	h := <-c
	if err := <-e; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// serve listens on addr inside ns and answers every connection with banner
// and the peer address it saw.
func serve(t *testing.T, ns netns.NsHandle, addr, banner string) {
	t.Helper()
	var ln net.Listener
	listen := func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}
	if ns == netns.None() {
		if err := listen(); err != nil {
			t.Fatal(err)
		}
	} else {
		inTestNS(t, ns, listen)
	}
	serveOn(t, ln, banner)
}

// serveOn answers every connection to ln with banner and the peer.
func serveOn(t *testing.T, ln net.Listener, banner string) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s from %s\n", banner, host)
			c.Close()
		}
	}()
}

// fetch connects to addr from ns (None = the test's own namespace) and
// returns the first line. A dropped SYN shows as a dial timeout: the 2 s
// bound is how long "unreachable" is waited for, not a speed assertion.
func fetch(ns netns.NsHandle, addr string) (string, error) {
	var conn net.Conn
	dial := func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", addr, 2*time.Second)
		return err
	}
	var err error
	if ns == netns.None() {
		err = dial()
	} else {
		err = inNS(ns, dial)
	}
	if err != nil {
		return "", err
	}
	return readBanner(conn)
}

// readBanner reads a serve banner's line and closes conn.
func readBanner(conn net.Conn) (string, error) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

func mustFetch(t *testing.T, ns netns.NsHandle, addr, want string) {
	t.Helper()
	got, err := fetch(ns, addr)
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	if got != want {
		t.Fatalf("connect %s: got %q, want %q", addr, got, want)
	}
}

func mustNotFetch(t *testing.T, ns netns.NsHandle, addr string) {
	t.Helper()
	if got, err := fetch(ns, addr); err == nil {
		t.Fatalf("connect %s succeeded (%q); want it blocked", addr, got)
	}
}

// dialFetch reads the banner at addr over a DialTCP connection.
func dialFetch(ctx context.Context, nsPath, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := DialTCP(ctx, nsPath, addr)
	if err != nil {
		return "", err
	}
	return readBanner(c)
}

// RedirectHTTPS sends a guest's connections to any address's port 443 to
// the egress proxy's port in its namespace; other ports are untouched.
func TestRedirectHTTPS(t *testing.T) {
	needRoot(t)
	m := newTestManager(t, testConfig(t))
	ctx := t.Context()
	inetNS, inetIP := fakeInternet(t)
	serve(t, inetNS, inetIP+":443", "internet-443")
	a, err := m.Setup(ctx, "sbr", Options{Egress: egress.Open()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Teardown(context.Background(), "sbr") })
	guest := fakeGuest(t, a)
	ln, err := ListenTCP(a.NamespacePath, net.JoinHostPort(GatewayIP, strconv.Itoa(EgressProxyPort)))
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, "proxy")
	hostIP := netip.MustParseAddr(inetIP).Prev().String()
	mustFetch(t, guest, net.JoinHostPort(inetIP, "443"), "internet-443 from "+hostIP)
	mustNotFetch(t, guest, net.JoinHostPort(GatewayIP, strconv.Itoa(EgressProxyPort)))
	if err := m.RedirectHTTPS(ctx, "sbr"); err != nil {
		t.Fatal(err)
	}
	mustFetch(t, guest, net.JoinHostPort(inetIP, "443"), "proxy from "+GuestIP)
	mustFetch(t, guest, "198.51.100.7:443", "proxy from "+GuestIP)
	if err := m.RedirectHTTPS(ctx, "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RedirectHTTPS(unknown) = %v, want ErrNotFound", err)
	}
}

// A guest reaches its own namespace only at the volume server's port,
// on a socket ListenTCP opened in that namespace.
func TestGuestReachesOnlyVolumeServer(t *testing.T) {
	needRoot(t)
	m := newTestManager(t, testConfig(t))
	a, err := m.Setup(t.Context(), "sbv", Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Teardown(context.Background(), "sbv") })
	guest := fakeGuest(t, a)
	for _, port := range []int{VolumeServerPort, VolumeServerPort + 1} {
		ln, err := ListenTCP(a.NamespacePath, net.JoinHostPort(GatewayIP, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, ln, "port-"+strconv.Itoa(port))
	}
	mustFetch(t, guest, net.JoinHostPort(GatewayIP, strconv.Itoa(VolumeServerPort)), "port-2049 from "+GuestIP)
	mustNotFetch(t, guest, net.JoinHostPort(GatewayIP, strconv.Itoa(VolumeServerPort+1)))
	// The listener is the namespace's, not the host's.
	mustNotFetch(t, netns.None(), net.JoinHostPort(GatewayIP, strconv.Itoa(VolumeServerPort)))
}

func TestTwoSlotsSameGuestIP(t *testing.T) {
	needRoot(t)
	m := newTestManager(t, testConfig(t))
	ctx := t.Context()
	if fp := footprint(t, m); len(fp) != 0 {
		t.Fatalf("footprint before: %v", fp)
	}
	a, err := m.Setup(ctx, "sba", Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Setup(ctx, "sbb", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Address == b.Address || a.HostVeth == b.HostVeth || a.TapName != b.TapName || a.GuestIP != b.GuestIP {
		t.Fatalf("slots not distinct / not alike: %+v %+v", a, b)
	}
	serve(t, fakeGuest(t, a), GuestIP+":49983", "guest-a")
	serve(t, fakeGuest(t, b), GuestIP+":49983", "guest-b")
	// The guest sees the tap address as the peer (SNAT), whatever its routes.
	mustFetch(t, netns.None(), net.JoinHostPort(a.Address, "49983"), "guest-a from "+GatewayIP)
	mustFetch(t, netns.None(), net.JoinHostPort(b.Address, "49983"), "guest-b from "+GatewayIP)

	slotNS, err := netns.GetFromPath(a.NamespacePath)
	if err != nil {
		t.Fatal(err)
	}
	inTestNS(t, slotNS, func() error {
		v, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		if err != nil || strings.TrimSpace(string(v)) != "1" {
			return fmt.Errorf("ip_forward in slot namespace = %q, %v", v, err)
		}
		return nil
	})
	slotNS.Close()

	if err := m.Teardown(ctx, "sba"); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx, "sba"); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
	mustNotFetch(t, netns.None(), net.JoinHostPort(a.Address, "49983"))
	mustFetch(t, netns.None(), net.JoinHostPort(b.Address, "49983"), "guest-b from "+GatewayIP)
	if err := m.Teardown(ctx, "sbb"); err != nil {
		t.Fatal(err)
	}
	if fp := footprint(t, m); len(fp) != 0 {
		t.Fatalf("teardown left: %v", fp)
	}
}

// fakeInternet is a namespace reached from the root namespace through a
// veth that does not carry the manager's prefix: an uplink that never
// leaves this machine.
func fakeInternet(t *testing.T) (netns.NsHandle, string) {
	t.Helper()
	third := byte(rand.IntN(256))
	return fakeNet(t, netip.AddrFrom4([4]byte{198, 18, third, 1}))
}

// fakeNet is a namespace reached from the root namespace through a /30
// whose first address, rootIP, the root namespace (the host) holds; it
// returns the namespace and the address it holds (rootIP.Next()).
func fakeNet(t *testing.T, rootIP netip.Addr) (netns.NsHandle, string) {
	t.Helper()
	inet := newAnonNS(t)
	inetIP := rootIP.Next()
	name := fmt.Sprintf("hi%d", rand.IntN(100000))
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "uplink", PeerNamespace: netlink.NsFd(int(inet))}
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(l)
		}
	})
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipnet(rootIP, 30)}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	inTestNS(t, inet, func() error {
		for _, n := range []string{"lo", "uplink"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		up, _ := netlink.LinkByName("uplink")
		return netlink.AddrAdd(up, &netlink.Addr{IPNet: ipnet(inetIP, 30)})
	})
	return inet, inetIP.String()
}

func TestInternetToggle(t *testing.T) {
	needRoot(t)
	m := newTestManager(t, testConfig(t))
	ctx := t.Context()
	inet, inetIP := fakeInternet(t)
	serve(t, inet, inetIP+":8080", "internet")
	site := net.JoinHostPort(inetIP, "8080")

	on, err := m.Setup(ctx, "son", Options{Egress: egress.Open()})
	if err != nil {
		t.Fatal(err)
	}
	off, err := m.Setup(ctx, "soff", Options{})
	if err != nil {
		t.Fatal(err)
	}
	gOn, gOff := fakeGuest(t, on), fakeGuest(t, off)
	serve(t, gOn, GuestIP+":49983", "on")
	serve(t, gOff, GuestIP+":49983", "off")
	uplinkIP := netip.MustParseAddr(inetIP).Prev().String()

	// Egress is masqueraded to the uplink's address.
	mustFetch(t, gOn, site, "internet from "+uplinkIP)
	mustNotFetch(t, gOff, site)
	// Host → guest works either way.
	mustFetch(t, netns.None(), net.JoinHostPort(off.Address, "49983"), "off from "+GatewayIP)

	if err := m.SetPolicy(ctx, "son", egress.Policy{}); err != nil {
		t.Fatal(err)
	}
	if err := m.SetPolicy(ctx, "soff", egress.Open()); err != nil {
		t.Fatal(err)
	}
	mustNotFetch(t, gOn, site)
	mustFetch(t, gOff, site, "internet from "+uplinkIP)
	mustFetch(t, netns.None(), net.JoinHostPort(on.Address, "49983"), "on from "+GatewayIP)
	if s, _ := m.Get("son"); s.Egress.AllowInternet {
		t.Fatal("Get reports internet on after SetPolicy(no internet)")
	}

	// Even with internet on, a guest reaches neither the host itself nor
	// another sandbox.
	serve(t, netns.None(), net.JoinHostPort(off.HostAddress, "18080"), "host")
	if got, err := fetch(netns.None(), net.JoinHostPort(off.HostAddress, "18080")); err != nil || !strings.HasPrefix(got, "host") {
		t.Fatalf("host listener: %q, %v", got, err)
	}
	mustNotFetch(t, gOff, net.JoinHostPort(off.HostAddress, "18080"))
	mustNotFetch(t, gOff, net.JoinHostPort(on.Address, "49983"))

	for _, id := range []string{"son", "soff"} {
		if err := m.Teardown(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if fp := footprint(t, m); len(fp) != 0 {
		t.Fatalf("teardown left: %v", fp)
	}
}

func TestCrashAdoptAndCleanup(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	m1 := newTestManager(t, cfg)
	ctx := t.Context()
	keep, err := m1.Setup(ctx, "keep", Options{Egress: egress.Open()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Setup(ctx, "lost", Options{}); err != nil {
		t.Fatal(err)
	}
	serve(t, fakeGuest(t, keep), GuestIP+":49983", "kept")
	// m1 "crashes": it is dropped without teardown. It ran in a private
	// mount namespace (as under `ip netns exec`), so the name of "keep"
	// went with it; a process in the namespace (its VM) remains.
	member := exec.Command("ip", "netns", "exec", keep.Namespace, "sleep", "300")
	if err := member.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = member.Process.Kill(); _ = member.Wait() })
	waitInNS(t, member.Process.Pid, keep.NamespacePath)
	if err := unix.Unmount(keep.NamespacePath, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}

	m2, err := NewManager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := m2.List()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"keep", "lost"}) {
		t.Fatalf("List = %v", ids)
	}
	got, err := m2.Adopt(ctx, "keep", member.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, keep) {
		t.Fatalf("Adopt = %+v, want %+v", got, keep)
	}
	if _, err := m2.Adopt(ctx, "nosuch", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Adopt(nosuch) = %v, want ErrNotFound", err)
	}
	if err := m2.CleanupStale(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keep.NamespacePath); err != nil {
		t.Fatalf("CleanupStale removed an adopted slot: %v", err)
	}
	if _, err := os.Stat(netnsDir + "/" + cfg.Prefix + "lost"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale namespace still there: %v", err)
	}
	mustFetch(t, netns.None(), net.JoinHostPort(keep.Address, "49983"), "kept from "+GatewayIP)
	// The allocator knows the adopted index: a new slot gets another one.
	n, err := m2.Setup(ctx, "new", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Index == keep.Index {
		t.Fatalf("new slot reuses adopted index %d", n.Index)
	}

	// Second crash: nothing adopted, everything goes.
	m3, err := NewManager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m3.CleanupStale(ctx); err != nil {
		t.Fatal(err)
	}
	if fp := footprint(t, m3); len(fp) != 0 {
		t.Fatalf("CleanupStale left: %v", fp)
	}
}

func TestConcurrentSetupTeardown(t *testing.T) {
	needRoot(t)
	m := newTestManager(t, testConfig(t))
	ctx := t.Context()
	const n = 8
	var wg sync.WaitGroup
	slots := make([]Slot, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			slots[i], errs[i] = m.Setup(ctx, fmt.Sprintf("c%d", i), Options{Egress: egress.Policy{AllowInternet: i%2 == 0}})
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[slots[i].Address] {
			t.Fatalf("address %s handed out twice", slots[i].Address)
		}
		seen[slots[i].Address] = true
	}
	for i := range n {
		wg.Go(func() { errs[i] = m.Teardown(ctx, fmt.Sprintf("c%d", i)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if fp := footprint(t, m); len(fp) != 0 {
		t.Fatalf("teardown left: %v", fp)
	}
}

func BenchmarkSetupTeardown(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	cfg := Config{Prefix: fmt.Sprintf("hb%d-", rand.IntN(1000)), Pool: netip.MustParsePrefix("10.254.254.0/24")}
	m, err := NewManager(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	// Keep one slot so the host chains are not rebuilt every iteration.
	if _, err := m.Setup(b.Context(), "pin", Options{}); err != nil {
		b.Fatal(err)
	}
	defer m.CleanupStale(context.Background())
	defer m.Teardown(context.Background(), "pin")
	// open: the operator's default-deny ranges and an open sandbox policy
	// (what every sandbox gets); rules40: plus 20 allowOut and 20 denyOut.
	var allow, deny []string
	for i := range 20 {
		allow = append(allow, fmt.Sprintf("198.51.%d.0/24", i))
		deny = append(deny, fmt.Sprintf("203.0.%d.0/24", i))
	}
	rules40, err := egress.New(true, allow, deny)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		pol  egress.Policy
	}{{"open", egress.Open()}, {"rules40", rules40}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Setup(b.Context(), "bench", Options{Egress: c.pol}); err != nil {
					b.Fatal(err)
				}
				if err := m.Teardown(b.Context(), "bench"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// waitInNS waits (bounded) until pid has joined the namespace at nsPath.
func waitInNS(t *testing.T, pid int, nsPath string) {
	t.Helper()
	var want unix.Stat_t
	if err := unix.Stat(nsPath, &want); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		var got unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got) == nil && got.Ino == want.Ino {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d never joined %s", pid, nsPath)
}

// TestEgressPolicy drives the egress rules with real traffic between
// namespaces the test made: an "internet" address, a private address the
// operator opened, a private address that stays closed, and an address of
// the host itself.
func TestEgressPolicy(t *testing.T) {
	needRoot(t)
	r := byte(rand.IntN(256))
	openedNet := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 31, r, 0}), 24)
	closedNet := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, r, 0}), 24)
	cfg := testConfig(t)
	cfg.OpenPrivate = []netip.Prefix{openedNet}
	m := newTestManager(t, cfg)
	ctx := t.Context()

	inetNS, inetIP := fakeInternet(t)
	openedNS, openedIP := fakeNet(t, openedNet.Addr().Next())
	closedNS, closedIP := fakeNet(t, closedNet.Addr().Next())
	hostIP := netip.MustParseAddr(inetIP).Prev().String() // the host's end of the fake uplink
	serve(t, inetNS, inetIP+":8080", "internet")
	serve(t, openedNS, openedIP+":8080", "opened")
	serve(t, closedNS, closedIP+":8080", "closed")
	serve(t, netns.None(), hostIP+":18081", "host")
	dst := map[string]string{
		"internet": net.JoinHostPort(inetIP, "8080"),
		"opened":   net.JoinHostPort(openedIP, "8080"),
		"closed":   net.JoinHostPort(closedIP, "8080"),
		"host":     net.JoinHostPort(hostIP, "18081"),
	}
	// The root namespace masquerades guests to its end of each link.
	from := map[string]string{
		"internet": hostIP,
		"opened":   netip.MustParseAddr(openedIP).Prev().String(),
		"closed":   netip.MustParseAddr(closedIP).Prev().String(),
	}
	// Every listener answers from the test's own namespace.
	for name, a := range dst {
		if got, err := fetch(netns.None(), a); err != nil || !strings.HasPrefix(got, name) {
			t.Fatalf("%s listener from the host: %q, %v", name, got, err)
		}
	}

	policy := func(internet bool, allow, deny []string) egress.Policy {
		t.Helper()
		p, err := egress.New(internet, allow, deny)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name    string
		policy  egress.Policy
		reaches []string // the others must be blocked
	}{
		{"default", egress.Open(), []string{"internet", "opened"}},
		{"denyOut", policy(true, nil, []string{inetIP}), []string{"opened"}},
		{"allowOut over denyOut all", policy(true, []string{inetIP}, []string{egress.AllTraffic}), []string{"internet"}},
		{"allowOut of a closed range", policy(true, []string{closedNet.String(), "0.0.0.0/0"}, nil), []string{"internet", "opened"}},
		{"no internet", policy(false, nil, nil), nil},
		{"no internet, allowOut opened", policy(false, []string{openedNet.String()}, nil), []string{"opened"}},
	}
	check := func(t *testing.T, g netns.NsHandle, reaches []string) {
		t.Helper()
		for _, name := range []string{"internet", "opened", "closed", "host"} {
			if slices.Contains(reaches, name) {
				mustFetch(t, g, dst[name], name+" from "+from[name])
			} else {
				mustNotFetch(t, g, dst[name])
			}
		}
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := fmt.Sprintf("pol%d", i)
			s, err := m.Setup(ctx, id, Options{Egress: c.policy})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Teardown(ctx, id)
			check(t, fakeGuest(t, s), c.reaches)
			// The egress proxy's upstream dials leave from the namespace
			// itself: the same policy applies to them.
			for _, name := range []string{"internet", "opened", "closed", "host"} {
				got, err := dialFetch(ctx, s.NamespacePath, dst[name])
				if reach := slices.Contains(c.reaches, name); reach != (err == nil) || (reach && got != name+" from "+from[name]) {
					t.Errorf("DialTCP from the namespace to %s: %q, %v; want reached=%v", name, got, err, reach)
				}
			}
		})
	}

	t.Run("SetPolicy on a running slot", func(t *testing.T) {
		s, err := m.Setup(ctx, "polset", Options{Egress: egress.Open()})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Teardown(ctx, "polset")
		g := fakeGuest(t, s)
		check(t, g, []string{"internet", "opened"})
		p := policy(false, []string{inetIP + "/32"}, nil)
		if err := m.SetPolicy(ctx, "polset", p); err != nil {
			t.Fatal(err)
		}
		check(t, g, []string{"internet"})
		// A restarted agent reads the policy back from the namespace.
		m2, err := NewManager(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m2.Adopt(ctx, "polset", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Egress, p) {
			t.Fatalf("adopted policy %+v, want %+v", got.Egress, p)
		}
	})
}
