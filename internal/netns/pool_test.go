package netns

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestPickPool: with real links and routes, a pool another agent's link
// routes is skipped, a pool this agent's own links route wins over the
// preferred one, and with nothing routed the first candidate is taken.
func TestPickPool(t *testing.T) {
	needRoot(t)
	base := testConfig(t).Pool.Addr().As4()
	var cands []netip.Prefix
	for i := range 3 {
		cands = append(cands, netip.PrefixFrom(netip.AddrFrom4([4]byte{base[0], base[1], base[2], byte(i * 64)}), 26))
	}
	mine := fmt.Sprintf("hp%d-", 100+rand.IntN(900))
	other := fmt.Sprintf("hq%d-", 100+rand.IntN(900))
	dummy := func(name string, addr netip.Prefix) {
		t.Helper()
		l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
		if err := netlink.LinkAdd(l); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netlink.LinkDel(l) })
		a, _ := netlink.ParseAddr(addr.String())
		if err := netlink.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	pick := func(want netip.Prefix) {
		t.Helper()
		got, err := PickPool(cands, mine)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("PickPool = %s, want %s", got, want)
		}
	}
	pick(cands[0])
	dummy(other+"0", netip.PrefixFrom(cands[0].Addr().Next(), 30))
	pick(cands[1])
	dummy(mine+"0", netip.PrefixFrom(cands[2].Addr().Next(), 30))
	pick(cands[2])
}
