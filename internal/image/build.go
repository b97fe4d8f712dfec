package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// builderVersion is part of every inputs hash: bump it when the builder
// changes what it produces, so existing data dirs rebuild.
const builderVersion = "hearth-image-1"

// Options configure Build.
type Options struct {
	DataDir string
	// Images to build ("base", "tiny", "code-interpreter"); empty means
	// all (tiny first: it is ready in seconds; code-interpreter last: it
	// is the biggest). The kernel and initramfs are always built.
	Images []string
	// Progress receives step lines; nil discards them.
	Progress io.Writer
	// Force rebuilds everything, including the cached debootstrap tree.
	Force bool
	// InitBinary and EnvdBinary are prebuilt static binaries to install;
	// when empty they are built from SourceDir (default: the hearth
	// source tree containing the working directory) with CGO_ENABLED=0.
	InitBinary, EnvdBinary string
	SourceDir              string
	// Mirror and Suite override the apt mirror/suite read from the host's
	// apt configuration (used for debootstrap).
	Mirror, Suite string
}

type builder struct {
	o    Options
	p    *progress
	apt  *apt
	bins guestBinaries
}

func (b *builder) cacheDir() string { return filepath.Join(b.o.DataDir, "cache") }

// Build builds the kernel, the initramfs and the requested images into
// o.DataDir, reusing whatever is already current. Concurrent builds of
// the same data dir are serialised by a lock file.
func Build(ctx context.Context, o Options) (err error) {
	if o.DataDir == "" {
		return errors.New("image build: no data dir")
	}
	if len(o.Images) == 0 {
		o.Images = []string{Tiny, Base, CodeInterpreter}
	}
	for _, n := range o.Images {
		if !contains(Names, n) {
			return fmt.Errorf("image build: unknown image %q (known: %s)", n, strings.Join(Names, ", "))
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("image build: must run as root (debootstrap and image ownership need it)")
	}
	p := newProgress(o.Progress)
	b := &builder{o: o, p: p, apt: &apt{progress: p}}
	if err := os.MkdirAll(b.cacheDir(), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(imagesDir(o.DataDir), 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(imagesDir(o.DataDir), ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		p.logf("waiting for another image build of %s", o.DataDir)
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
	}

	done := p.step("guest binaries (hearth-init, envd)")
	tmp, err := os.MkdirTemp(b.cacheDir(), "bin-")
	if err != nil {
		done(err)
		return err
	}
	defer os.RemoveAll(tmp)
	b.bins, err = loadGuestBinaries(ctx, o, tmp, p)
	done(err)
	if err != nil {
		return err
	}

	done = p.step("kernel + initramfs")
	k, err := b.buildKernel(ctx)
	done(err)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	for _, name := range o.Images {
		done := p.step("rootfs " + name)
		err := b.buildRootfs(ctx, name, k)
		done(err)
		if err != nil {
			return fmt.Errorf("rootfs %s: %w", name, err)
		}
	}
	return nil
}
