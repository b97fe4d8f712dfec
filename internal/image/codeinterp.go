package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/codeinterp"
	"github.com/hearth-sandbox/hearth/internal/guestinit"
)

// codeInterpreterPackages are what the code-interpreter image adds to
// base, all from Debian: the Jupyter kernel and client the server drives,
// and the libraries model-written analysis code expects.
//
// python3-munkres is there for its place in an alternative:
// python3-fonttools (matplotlib) depends on "python3-scipy |
// python3-munkres", and taking scipy brings pythran, g++ and the boost
// headers (about 700 MB) into the image.
func codeInterpreterPackages() []string {
	return []string{
		"python3-ipykernel", "python3-jupyter-client", "python3-numpy", "python3-pandas", "python3-matplotlib",
		"python3-munkres",
	}
}

// codeInterpreterTree returns cache/debootstrap-ci-<key>: a copy of the
// base debootstrap tree with the packages installed by apt-get in a
// chroot. Not debootstrap --include: its resolver always takes the first
// alternative of a dependency and knows no virtual packages (python3-zmq
// needs python3-cffi-backend-api-min), where apt resolves both.
func (b *builder) codeInterpreterTree(ctx context.Context, key, baseTree string) (string, error) {
	return b.cachedTree("debootstrap-ci-", key, "code-interpreter tree", func(partial string) error {
		if _, err := run(ctx, "", "cp", "-a", "--reflink=auto", baseTree, partial); err != nil {
			return err
		}
		// apt in the chroot resolves the mirror's name with the host's
		// resolver; the guest init writes its own resolv.conf at boot.
		resolv, err := os.ReadFile("/etc/resolv.conf")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(partial, "etc", "resolv.conf"), resolv, 0o644); err != nil {
			return err
		}
		apt := func(args ...string) error {
			b.p.logf("chroot apt-get %s", strings.Join(args, " "))
			cmd := exec.CommandContext(ctx, "chroot", append([]string{partial, "apt-get", "-q", "-o", "Dpkg::Use-Pty=0"}, args...)...)
			cmd.Env = []string{"DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("chroot apt-get %s: %w: %s", args[0], err, lastLines(string(out), 10))
			}
			return nil
		}
		for _, args := range [][]string{
			{"update"},
			append([]string{"install", "-y", "--no-install-recommends"}, codeInterpreterPackages()...),
			{"clean"},
		} {
			if err := apt(args...); err != nil {
				return err
			}
		}
		_ = os.Remove(filepath.Join(partial, "etc", "resolv.conf"))
		cleanDir(filepath.Join(partial, "var/lib/apt/lists"), "_Packages", "_InRelease", "_Release", "_Translation-en")
		return nil
	})
}

// codeInterpreterService is the guest init's service file: an executable
// the init starts after envd and restarts when it exits.
const codeInterpreterService = "#!/bin/sh\n# Started (and restarted) by hearth-init; see internal/codeinterp.\nexec /usr/bin/python3 " +
	codeinterp.ServerPath + "\n"

// codeInterpreterSum is the part of the image's inputs hash that is not
// packages: the server and its service file.
func codeInterpreterSum() string {
	return sha(append(append([]byte{}, codeinterp.Script...), codeInterpreterService...))
}

// installCodeInterpreter writes the server and its service file into a
// root tree (through os.Root, as installGuest does).
func installCodeInterpreter(tree string) error {
	r, err := os.OpenRoot(tree)
	if err != nil {
		return err
	}
	defer r.Close()
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{codeinterp.ServerPath, codeinterp.Script, 0o755},
		{path.Join(guestinit.ServicesDir, codeinterp.ServiceName), []byte(codeInterpreterService), 0o755},
	}
	for _, f := range files {
		rel := strings.TrimPrefix(f.path, "/")
		if err := r.MkdirAll(path.Dir(rel), 0o755); err != nil {
			return err
		}
		if err := r.WriteFile(rel, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}
