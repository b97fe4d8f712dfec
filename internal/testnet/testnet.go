// Package testnet gives tests a small private network of Linux network
// namespaces, so several processes (e.g. host agents) can each have their
// own address on one machine.
//
// Layout for a Net with subnet 10.203.X.0/24 (X chosen free at creation):
//
//	root namespace: bridge htn<X>, address 10.203.X.1 (Net.Gateway)
//	node i (1..N):  namespace htn<X>-<i> at /run/netns/, eth0 10.203.X.(10+i),
//	                veth htn<X>v<i> in the root namespace on the bridge
//
// Nodes reach each other and the root namespace (at Gateway) on the
// bridge. They have no default route, so nothing they do can reach any
// other address: a test's traffic stays inside the subnet.
//
// Everything is named with the "htn" prefix and removed by Close (Setup
// registers it with t.Cleanup). Creation is serialized across processes
// by a lock file so parallel test binaries pick different subnets.
//
// Typical use (tests/multihost):
//
//	n := testnet.Setup(t, 3)                     // skips unless root with netns support
//	cmd := n.Nodes[0].Command(ctx, agentBin, "--listen", n.Nodes[0].Addr.String()+":7070")
//	... control plane listens on n.Gateway ...
package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Prefix starts the name of every object this package creates.
const Prefix = "htn"

// DefaultRange is where subnets are taken from: 10.203.X.0/24.
var defaultRange = netip.MustParsePrefix("10.203.0.0/16")

const lockPath = "/run/hearth-testnet.lock"

// Net is a bridge in the root namespace and its nodes.
type Net struct {
	Subnet  netip.Prefix // 10.203.X.0/24
	Gateway netip.Addr   // the bridge's address in the root namespace
	Bridge  string
	Nodes   []*Node
}

// Node is one network namespace with one address.
type Node struct {
	Name string     // namespace name (/run/netns/<Name>)
	Addr netip.Addr // eth0's address
	veth string     // root end
}

// Setup creates a Net of n nodes for t and removes it when t ends. It
// skips t when the machine cannot do it (not root, no netns, no ip(8)).
func Setup(t testing.TB, n int) *Net {
	t.Helper()
	if reason := Unsupported(); reason != "" {
		t.Skipf("testnet: %s", reason)
	}
	nw, err := New(n)
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() {
		if err := nw.Close(); err != nil {
			t.Errorf("testnet: cleanup: %v", err)
		}
	})
	return nw
}

// Unsupported says why this machine cannot create a Net ("" if it can).
func Unsupported() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces, veths, bridges); run the test as root"
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return "needs network namespace support in the kernel"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs ip(8) to run commands in namespaces; install iproute2"
	}
	return ""
}

// New creates a Net of n nodes. Call Close to remove it.
func New(n int) (_ *Net, err error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("testnet: %d nodes; want 1..200", n)
	}
	unlock, err := lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	x, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	nw := &Net{
		Subnet:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 203, byte(x), 0}), 24),
		Gateway: netip.AddrFrom4([4]byte{10, 203, byte(x), 1}),
		Bridge:  fmt.Sprintf("%s%d", Prefix, x),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, nw.Close())
		}
	}()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: nw.Bridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return nw, fmt.Errorf("testnet: add bridge %s: %w", nw.Bridge, err)
	}
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: ipNet(nw.Gateway, 24)}); err != nil {
		return nw, fmt.Errorf("testnet: address bridge: %w", err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nw, fmt.Errorf("testnet: bridge up: %w", err)
	}
	for i := 1; i <= n; i++ {
		node := &Node{
			Name: fmt.Sprintf("%s%d-%d", Prefix, x, i),
			Addr: netip.AddrFrom4([4]byte{10, 203, byte(x), byte(10 + i)}),
			veth: fmt.Sprintf("%s%dv%d", Prefix, x, i),
		}
		nw.Nodes = append(nw.Nodes, node)
		if err := node.create(br, fmt.Sprintf("%s%dp%d", Prefix, x, i)); err != nil {
			return nw, err
		}
	}
	return nw, nil
}

func (nd *Node) create(br netlink.Link, peer string) error {
	ns, err := newNamedNS(nd.Name)
	if err != nil {
		return fmt.Errorf("testnet: namespace %s: %w", nd.Name, err)
	}
	defer ns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nd.veth, MasterIndex: br.Attrs().Index}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("testnet: veth %s: %w", nd.veth, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return fmt.Errorf("testnet: %s up: %w", nd.veth, err)
	}
	p, err := netlink.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	if err := netlink.LinkSetNsFd(p, int(ns)); err != nil {
		return fmt.Errorf("testnet: move %s into %s: %w", peer, nd.Name, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("testnet: netlink in %s: %w", nd.Name, err)
	}
	defer h.Close()
	p, err = h.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	if err := h.LinkSetName(p, "eth0"); err != nil {
		return fmt.Errorf("testnet: rename %s: %w", peer, err)
	}
	if err := h.AddrAdd(p, &netlink.Addr{IPNet: ipNet(nd.Addr, 24)}); err != nil {
		return fmt.Errorf("testnet: address %s: %w", nd.Name, err)
	}
	if err := h.LinkSetUp(p); err != nil {
		return fmt.Errorf("testnet: eth0 up in %s: %w", nd.Name, err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("testnet: lo up in %s: %w", nd.Name, err)
	}
	return nil
}

// Close removes the nodes' namespaces, their veths and the bridge. Kill
// the processes running in the nodes first: a namespace with processes
// outlives its name, though its link to the bridge is cut here.
func (nw *Net) Close() error {
	var errs []error
	for _, nd := range nw.Nodes {
		if l, err := netlink.LinkByName(nd.veth); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", nd.veth, err))
			}
		}
		if _, err := os.Stat("/run/netns/" + nd.Name); err == nil {
			if err := netns.DeleteNamed(nd.Name); err != nil {
				errs = append(errs, fmt.Errorf("delete namespace %s: %w", nd.Name, err))
			}
		}
	}
	if l, err := netlink.LinkByName(nw.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", nw.Bridge, err))
		}
	}
	return errors.Join(errs...)
}

// Command returns a command that runs name with args inside the node's
// namespace (through `ip netns exec`, which execs it: the process's PID is
// the command's). Arguments are passed as a list, never through a shell.
func (nd *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", nd.Name, name}, args...)...)
}

// Do runs fn on an OS thread inside the node's namespace: sockets fn opens
// (net.Listen, net.Dial) belong to the node and keep working after fn
// returns. The thread is discarded afterwards, so no other goroutine ever
// runs in the node's namespace by accident.
func (nd *Node) Do(fn func() error) error {
	ns, err := netns.GetFromName(nd.Name)
	if err != nil {
		return fmt.Errorf("testnet: open namespace %s: %w", nd.Name, err)
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the goroutine exits locked
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("testnet: enter %s: %w", nd.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Listen opens a TCP listener on the node's address.
func (nd *Node) Listen(port int) (net.Listener, error) {
	var l net.Listener
	err := nd.Do(func() (err error) {
		l, err = net.Listen("tcp", netip.AddrPortFrom(nd.Addr, uint16(port)).String())
		return err
	})
	return l, err
}

// Dial opens a TCP connection from inside the node.
func (nd *Node) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := nd.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

func newNamedNS(name string) (netns.NsHandle, error) {
	type res struct {
		h   netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // NewNamed moves this thread; let it die with the goroutine
		h, err := netns.NewNamed(name)
		c <- res{h, err}
	}()
	r := <-c
	return r.h, r.err
}

// freeSubnet picks X such that no link named htn<X> exists and no root
// address lies in 10.203.X.0/24. Called with the lock held.
func freeSubnet() (int, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("testnet: list addresses: %w", err)
	}
	used := map[int]bool{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if ok && defaultRange.Contains(ip) {
			used[int(ip.As4()[2])] = true
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		return 0, fmt.Errorf("testnet: list links: %w", err)
	}
	for _, l := range links {
		var x int
		if name := l.Attrs().Name; strings.HasPrefix(name, Prefix) {
			if _, err := fmt.Sscanf(name[len(Prefix):], "%d", &x); err == nil {
				used[x] = true
			}
		}
	}
	for x := 0; x < 256; x++ {
		if !used[x] {
			if _, err := os.Stat(fmt.Sprintf("/run/netns/%s%d-1", Prefix, x)); err == nil {
				continue // a leftover namespace: leave it alone
			}
			return x, nil
		}
	}
	return 0, errors.New("testnet: no free subnet in 10.203.0.0/16")
}

func lock() (func(), error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("testnet: lock %s: %w", lockPath, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}
