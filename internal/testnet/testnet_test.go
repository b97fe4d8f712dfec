package testnet_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/hearth-sandbox/hearth/internal/testnet"
)

// echo accepts one connection on l and echoes a line back with a prefix.
func echo(l net.Listener, prefix string) {
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Fprintf(c, "%s%s", prefix, line)
}

func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestNet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := testnet.Setup(t, 3)
	if len(n.Nodes) != 3 || !n.Subnet.Contains(n.Gateway) {
		t.Fatalf("net %+v", n)
	}
	seen := map[netip.Addr]bool{n.Gateway: true}
	for _, nd := range n.Nodes {
		if !n.Subnet.Contains(nd.Addr) || seen[nd.Addr] {
			t.Fatalf("node %s address %s", nd.Name, nd.Addr)
		}
		seen[nd.Addr] = true
	}
	a, b := n.Nodes[0], n.Nodes[1]

	// Root namespace → node.
	la, err := a.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	if got := la.Addr().(*net.TCPAddr).IP.String(); got != a.Addr.String() {
		t.Fatalf("listener on %s", got)
	}
	go echo(la, "a:")
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", la.Addr().String())
	if err != nil {
		t.Fatalf("root → node: %v", err)
	}
	if got := roundTrip(t, c, "hi"); got != "a:hi" {
		t.Fatalf("root → node answered %q", got)
	}

	// Node → node, over the bridge.
	go echo(la, "a:")
	c, err = b.Dial(ctx, la.Addr().String())
	if err != nil {
		t.Fatalf("node → node: %v", err)
	}
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != b.Addr.String() {
		t.Fatalf("node b dialled from %s", got)
	}
	if got := roundTrip(t, c, "from b"); got != "a:from b" {
		t.Fatalf("node → node answered %q", got)
	}

	// Node → root namespace (where a control plane would listen).
	lr, err := net.Listen("tcp", netip.AddrPortFrom(n.Gateway, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	go echo(lr, "root:")
	c, err = a.Dial(ctx, lr.Addr().String())
	if err != nil {
		t.Fatalf("node → root: %v", err)
	}
	if got := roundTrip(t, c, "up"); got != "root:up" {
		t.Fatalf("node → root answered %q", got)
	}

	// A process started with Command lives in the node: it sees eth0 with
	// the node's address and no default route.
	out, err := a.Command(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), a.Addr.String()+"/24") {
		t.Fatalf("ip addr in node: %v\n%s", err, out)
	}
	out, err = a.Command(ctx, "ip", "route", "show", "default").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("node has a default route: %v %q", err, out)
	}

	// Isolation, checked without sending anything: the kernel has no route
	// from a node to an address outside the subnet.
	err = a.Do(func() error {
		_, err := netlink.RouteGet(net.ParseIP("192.0.2.1"))
		return err
	})
	if err == nil {
		t.Fatal("a node can route outside its subnet")
	}
}

func TestClose(t *testing.T) {
	if reason := testnet.Unsupported(); reason != "" {
		t.Skipf("testnet: %s", reason)
	}
	n, err := testnet.New(2)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{n.Nodes[0].Name, n.Nodes[1].Name}
	// A second Net at the same time gets another subnet.
	m, err := testnet.New(1)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	if m.Subnet == n.Subnet || m.Bridge == n.Bridge {
		t.Errorf("two nets share %s", m.Subnet)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
			t.Errorf("namespace %s left behind: %v", name, err)
		}
		if h, err := netns.GetFromName(name); err == nil {
			h.Close()
			t.Errorf("namespace %s still opens", name)
		}
	}
	for _, link := range []string{n.Bridge, m.Bridge} {
		if _, err := netlink.LinkByName(link); err == nil {
			t.Errorf("link %s left behind", link)
		}
	}
}
