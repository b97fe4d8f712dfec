package guestinit

import (
	"fmt"
	"net/netip"
	"strings"
)

// Cmdline is the part of the kernel command line the guest init reads.
// Parameters (all optional):
//
//	hearth.ip=169.254.0.21/30   eth0 address
//	hearth.gw=169.254.0.22      default gateway
//	hearth.dns=IP               nameserver written to /etc/resolv.conf
//	hearth.hostname=NAME        default "hearth"
//	hearth.iface=NAME           default "eth0"
//	hearth.root=/dev/vda        root device mounted by the initramfs stage
//	hearth.rootfstype=ext4      its filesystem type
//	hearth.envd=/usr/bin/envd   the daemon to supervise
//	hearth.debug=1              print each boot step with the kernel uptime
//	hearth.volume=EXPORT:PATH   mount NFS export /EXPORT at PATH (repeatable)
//	hearth.nfs=IP:PORT          the volumes' NFSv3 server (MOUNT and NFS on one port)
type Cmdline struct {
	Debug      bool
	IP         netip.Prefix
	Gateway    netip.Addr
	DNS        []netip.Addr
	Hostname   string
	Iface      string
	Root       string
	RootFSType string
	Envd       string
	// Volumes are NFS exports of VolumeServer to mount before envd
	// starts.
	Volumes      []VolumeMount
	VolumeServer netip.AddrPort
	// ModuleParams holds "module.param=value" entries keyed by module name
	// (dashes normalised to underscores). With a loadable module the kernel
	// does not apply them itself: modprobe reads them from /proc/cmdline,
	// and so does our loader (virtio_mmio.device=... on Firecracker).
	ModuleParams map[string][]string
}

// ParseCmdline parses the contents of /proc/cmdline. Malformed hearth.*
// values are errors so a misconfigured VM fails loudly on the console
// instead of booting without a network.
func ParseCmdline(s string) (Cmdline, error) {
	c := Cmdline{
		Hostname:     "hearth",
		Iface:        "eth0",
		Root:         "/dev/vda",
		RootFSType:   "ext4",
		Envd:         "/usr/bin/envd",
		ModuleParams: map[string][]string{},
	}
	for _, tok := range strings.Fields(s) {
		key, val, hasVal := strings.Cut(tok, "=")
		switch key {
		case "hearth.ip":
			p, err := netip.ParsePrefix(val)
			if err != nil {
				return c, fmt.Errorf("hearth.ip: %w", err)
			}
			c.IP = p
		case "hearth.gw":
			a, err := netip.ParseAddr(val)
			if err != nil {
				return c, fmt.Errorf("hearth.gw: %w", err)
			}
			c.Gateway = a
		case "hearth.dns":
			for _, v := range strings.Split(val, ",") {
				a, err := netip.ParseAddr(v)
				if err != nil {
					return c, fmt.Errorf("hearth.dns: %w", err)
				}
				c.DNS = append(c.DNS, a)
			}
		case "hearth.hostname":
			if val != "" {
				c.Hostname = val
			}
		case "hearth.iface":
			if val != "" {
				c.Iface = val
			}
		case "hearth.root":
			if val != "" {
				c.Root = val
			}
		case "hearth.rootfstype":
			if val != "" {
				c.RootFSType = val
			}
		case "hearth.debug":
			c.Debug = val != "0"
		case "hearth.volume":
			tag, path, ok := strings.Cut(val, ":")
			if !ok || tag == "" || !strings.HasPrefix(path, "/") || path == "/" {
				return c, fmt.Errorf("hearth.volume: want TAG:/path, got %q", val)
			}
			c.Volumes = append(c.Volumes, VolumeMount{Tag: tag, Path: path})
		case "hearth.nfs":
			a, err := netip.ParseAddrPort(val)
			if err != nil {
				return c, fmt.Errorf("hearth.nfs: %w", err)
			}
			c.VolumeServer = a
		case "hearth.envd":
			if val != "" {
				c.Envd = val
			}
		default:
			mod, param, ok := strings.Cut(key, ".")
			if !ok || !hasVal || mod == "" || param == "" || strings.HasPrefix(mod, "hearth") {
				continue
			}
			mod = strings.ReplaceAll(mod, "-", "_")
			c.ModuleParams[mod] = append(c.ModuleParams[mod], param+"="+val)
		}
	}
	if len(c.Volumes) > 0 && !c.VolumeServer.IsValid() {
		return c, fmt.Errorf("hearth.volume without hearth.nfs")
	}
	return c, nil
}

// VolumeMount is one hearth.volume parameter: NFS export "/"+Tag at Path.
type VolumeMount struct{ Tag, Path string }

// VolumeArgs are the kernel parameters that make init mount NFS export
// "/"+tag of server at path (the host agent writes them; path has no
// spaces, and everything after the first colon is the path).
func VolumeArgs(server netip.AddrPort, mounts []VolumeMount) string {
	var b strings.Builder
	b.WriteString("hearth.nfs=" + server.String())
	for _, m := range mounts {
		b.WriteString(" hearth.volume=" + m.Tag + ":" + m.Path)
	}
	return b.String()
}
