package rootfs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// fsUsers lists what keeps the filesystem mounted at mount (device dev)
// alive beyond that one mount. users are processes with a file of it open,
// mapped, or as working or root directory: they are using its data.
// copies are mounts of it in this or another mount namespace other than
// mount itself and its propagated copies (which an unmount of mount takes
// along): typically namespaces copied from ours while it was mounted
// (`ip netns exec`, another agent's per-VM namespaces); they keep the
// filesystem (and its loop device) alive until they go away, but nobody
// uses the data through them. It reads /proc, so it sees every process of
// the host's PID namespace when run as root.
func fsUsers(mount string, dev uint64) (users, copies []string, err error) {
	major, minor := unix.Major(dev), unix.Minor(dev)
	devID := fmt.Sprintf("%d:%d", major, minor)
	mapsID := fmt.Sprintf("%02x:%02x", major, minor)
	peer, err := sharedPeer(mount)
	if err != nil {
		return nil, nil, err
	}
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, nil, err
	}
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return nil, nil, err
	}
	seenNS := map[string]bool{}
	for _, proc := range procs {
		name := func() string {
			comm, _ := os.ReadFile(proc + "/comm")
			return fmt.Sprintf("pid %s (%s)", filepath.Base(proc), strings.TrimSpace(string(comm)))
		}
		if what := procUses(proc, dev, mapsID); what != "" {
			users = append(users, name()+" has "+what)
			continue
		}
		ns, err := os.Readlink(proc + "/ns/mnt")
		if err != nil || seenNS[ns] {
			continue // exited, or a kernel thread
		}
		seenNS[ns] = true
		if m := extraMount(proc+"/mountinfo", devID, mount, peer, ns == self); m != "" {
			copies = append(copies, fmt.Sprintf("the mount namespace of %s mounts it at %s", name(), m))
		}
	}
	return users, copies, nil
}

// procUses says how process proc uses a file on dev, or "".
func procUses(proc string, dev uint64, mapsID string) string {
	var st unix.Stat_t
	for _, l := range []string{"cwd", "root"} {
		if unix.Stat(proc+"/"+l, &st) == nil && st.Dev == dev {
			return "its " + l + " in it"
		}
	}
	fds, _ := os.ReadDir(proc + "/fd")
	for _, fd := range fds {
		if unix.Stat(proc+"/fd/"+fd.Name(), &st) == nil && st.Dev == dev {
			target, _ := os.Readlink(proc + "/fd/" + fd.Name())
			return "open " + target
		}
	}
	f, err := os.Open(proc + "/maps")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address perms offset dev inode path
		if fl := strings.Fields(sc.Text()); len(fl) >= 6 && fl[3] == mapsID && fl[4] != "0" {
			return "mapped " + fl[5]
		}
	}
	return ""
}

// sharedPeer returns the peer group ID of the mount at mount ("shared:N"
// in /proc/self/mountinfo), or "" when it is not shared.
func sharedPeer(mount string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 7 || f[4] != mount {
			continue
		}
		peer := ""
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			if v, ok := strings.CutPrefix(opt, "shared:"); ok {
				peer = v
			}
		}
		return peer, nil // the last entry wins: the top of a stack
	}
	return "", nil
}

// extraMount returns the mount point of a mount of devID in mountinfo that
// an unmount of mount would leave behind, or "". Left alone: in our own
// namespace (sameNS) mount itself; in others, copies of it at the same
// path that are its peers or slaves (peer group peer, when mount is
// shared), as the unmount propagates to them.
func extraMount(mountinfo, devID, mount, peer string, sameNS bool) string {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options [optional...] - type source superoptions
		f := strings.Fields(l)
		if len(f) < 7 || f[2] != devID {
			continue
		}
		if f[3] == "/" && f[4] == mount && (sameNS || propagatedFrom(f[6:], peer)) {
			continue
		}
		return f[4]
	}
	return ""
}

// propagatedFrom reports whether a mount's optional fields make it a peer
// or slave of peer group peer.
func propagatedFrom(opts []string, peer string) bool {
	if peer == "" {
		return false
	}
	for _, opt := range opts {
		if opt == "-" {
			return false
		}
		if opt == "shared:"+peer || opt == "master:"+peer {
			return true
		}
	}
	return false
}
