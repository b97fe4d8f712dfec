package guestinit

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    func(c *Cmdline)
		wantErr bool
	}{
		{
			name: "defaults",
			in:   "console=ttyS0 quiet",
			want: func(c *Cmdline) {},
		},
		{
			name: "network",
			in:   "console=ttyS0 hearth.ip=169.254.0.21/30 hearth.gw=169.254.0.22 hearth.dns=1.1.1.1,8.8.8.8 quiet",
			want: func(c *Cmdline) {
				c.IP = netip.MustParsePrefix("169.254.0.21/30")
				c.Gateway = netip.MustParseAddr("169.254.0.22")
				c.DNS = []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("8.8.8.8")}
			},
		},
		{
			name: "overrides and module params",
			in:   "hearth.hostname=box hearth.root=/dev/vdb hearth.envd=/bin/true virtio_mmio.device=4K@0xd0000000:5 virtio-mmio.device=4K@0xd0001000:6 tsc=reliable",
			want: func(c *Cmdline) {
				c.Hostname, c.Root, c.Envd = "box", "/dev/vdb", "/bin/true"
				c.ModuleParams["virtio_mmio"] = []string{"device=4K@0xd0000000:5", "device=4K@0xd0001000:6"}
			},
		},
		{
			name: "volumes",
			in:   VolumeArgs(netip.MustParseAddrPort("169.254.0.22:2049"), []VolumeMount{{"abc", "/data"}, {"def", "/home/user/my:dir"}}),
			want: func(c *Cmdline) {
				c.Volumes = []VolumeMount{{"abc", "/data"}, {"def", "/home/user/my:dir"}}
				c.VolumeServer = netip.MustParseAddrPort("169.254.0.22:2049")
			},
		},
		{name: "volume without path", in: "hearth.volume=abc", wantErr: true},
		{name: "volume at root", in: "hearth.nfs=169.254.0.22:2049 hearth.volume=abc:/", wantErr: true},
		{name: "volume without server", in: "hearth.volume=abc:/data", wantErr: true},
		{name: "bad nfs server", in: "hearth.nfs=169.254.0.22 hearth.volume=abc:/data", wantErr: true},
		{name: "bad ip", in: "hearth.ip=169.254.0.21", wantErr: true},
		{name: "bad gw", in: "hearth.gw=nope", wantErr: true},
		{name: "bad dns", in: "hearth.dns=1.1.1.1,x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseCmdline(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseCmdline(%q) = nil error, want one", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := ParseCmdline("")
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("ParseCmdline(%q)\n got %+v\nwant %+v", tt.in, got, want)
			}
		})
	}
}

func TestModuleName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"virtio_net.ko":                 "virtio_net",
		"/lib/modules/x/virtio-mmio.ko": "virtio_mmio",
		"vmw_vsock_virtio_transport.ko": "vmw_vsock_virtio_transport",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHostsHas(t *testing.T) {
	t.Parallel()
	if !hostsHas("127.0.0.1 localhost\n127.0.1.1\tbox\n", "box") {
		t.Fatal("hostname present not detected")
	}
	if hostsHas("127.0.0.1 localhost box2\n", "box") {
		t.Fatal("prefix match must not count")
	}
	if hostsHas("box 127.0.0.1\n", "box") {
		t.Fatal("the address column is not a name")
	}
}
