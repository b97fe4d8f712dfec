package guestinit

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// linkWait bounds the wait for the NIC after virtio_net is loaded.
const linkWait = 10 * time.Second

// configureNetwork brings up lo and, when hearth.ip is set, the guest NIC
// with its address and default route.
func configureNetwork(cl Cmdline) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if !cl.IP.IsValid() {
		return nil
	}
	var link netlink.Link
	deadline := time.Now().Add(linkWait)
	for {
		link, err = netlink.LinkByName(cl.Iface)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("interface %s: %w", cl.Iface, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(cl.IP.Addr().AsSlice()),
		Mask: net.CIDRMask(cl.IP.Bits(), cl.IP.Addr().BitLen()),
	}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", cl.IP, cl.Iface, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s up: %w", cl.Iface, err)
	}
	if cl.Gateway.IsValid() {
		route := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Gw:        net.IP(cl.Gateway.AsSlice()),
		}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("default route via %s: %w", cl.Gateway, err)
		}
	}
	return nil
}

// writeResolvConf replaces /etc/resolv.conf (possibly a dangling symlink
// into /run) when nameservers were given.
func writeResolvConf(cl Cmdline) error {
	if len(cl.DNS) == 0 {
		return nil
	}
	var b strings.Builder
	for _, a := range cl.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	_ = os.Remove("/etc/resolv.conf")
	return os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644)
}

// writeHosts makes the hostname resolvable locally (sudo and many tools
// look it up) without clobbering a template's own entries.
func writeHosts(hostname string) error {
	data, _ := os.ReadFile("/etc/hosts")
	s := string(data)
	if hostsHas(s, hostname) {
		return nil
	}
	if !strings.Contains(s, "localhost") {
		s += "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	}
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	s += "127.0.1.1\t" + hostname + "\n"
	return os.WriteFile("/etc/hosts", []byte(s), 0o644)
}

// hostsHas reports whether an /etc/hosts text maps some address to name.
func hostsHas(hosts, name string) bool {
	for _, line := range strings.Split(hosts, "\n") {
		fields := strings.Fields(line)
		for _, f := range fields[min(1, len(fields)):] {
			if f == name {
				return true
			}
		}
	}
	return false
}
