package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KernelMetaPackage is the Debian metapackage that names the cloud kernel.
const KernelMetaPackage = "linux-image-cloud-amd64"

type kernelResult struct {
	release string // e.g. 6.1.0-56-cloud-amd64
}

// buildKernel produces images/kernel/{vmlinux,modules/,version,initramfs.cpio}.
// The kernel part (vmlinux + modules) is keyed by the package version;
// the initramfs additionally by the init binary, so a new init rebuilds
// only the (small) cpio.
func (b *builder) buildKernel(ctx context.Context) (kernelResult, error) {
	var res kernelResult
	pkg, err := b.apt.kernelPackage(ctx, KernelMetaPackage)
	if err != nil {
		return res, err
	}
	ver, err := b.apt.candidate(ctx, pkg)
	if err != nil {
		return res, err
	}
	var names []string
	for _, m := range GuestModules {
		names = append(names, m.Name)
	}
	kernelHash := inputsHash(builderVersion, "kernel", pkg, ver, strings.Join(names, ","))
	initrdHash := inputsHash(kernelHash, b.bins.initSum)

	dir := filepath.Join(imagesDir(b.o.DataDir), KernelName)
	old, _ := ReadManifest(b.o.DataDir, KernelName)
	kernelOK := !b.o.Force && old.Parts["kernel"] == kernelHash && exists(KernelPath(b.o.DataDir)) &&
		exists(filepath.Join(dir, "modules", "modules.order"))
	initrdOK := kernelOK && old.Parts["initramfs"] == initrdHash && exists(InitrdPath(b.o.DataDir))
	if kernelOK && initrdOK {
		b.p.logf("up to date: %s %s", pkg, ver)
		res.release = old.KernelVersion
		return res, nil
	}
	t0 := time.Now()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	release := old.KernelVersion
	if !kernelOK {
		if release, err = b.extractKernel(ctx, pkg, ver, dir); err != nil {
			return res, err
		}
	} else {
		b.p.logf("kernel %s up to date; rebuilding the initramfs (new init)", release)
	}
	mods, err := readShippedModules(filepath.Join(dir, "modules"))
	if err != nil {
		return res, err
	}
	tmp := InitrdPath(b.o.DataDir) + ".tmp"
	if err := writeInitramfs(tmp, b.bins.init, mods); err != nil {
		return res, fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(tmp, InitrdPath(b.o.DataDir)); err != nil {
		return res, err
	}
	b.p.logf("initramfs: init + %d modules", len(mods))
	m := Manifest{
		Name:          KernelName,
		KernelVersion: release,
		Files:         fileSizes(dir, "vmlinux", "initramfs.cpio"),
		Packages:      map[string]string{pkg: ver},
		BuiltAt:       time.Now().UTC(),
		BuildSeconds:  time.Since(t0).Seconds(),
		InputsHash:    initrdHash,
		Parts:         map[string]string{"kernel": kernelHash, "initramfs": initrdHash},
	}
	res.release = release
	return res, writeManifest(b.o.DataDir, m)
}

// extractKernel downloads and unpacks the kernel package, writes vmlinux,
// the version file and the selected modules; it returns the release.
func (b *builder) extractKernel(ctx context.Context, pkg, ver, dir string) (string, error) {
	deb, err := b.apt.download(ctx, b.cacheDir(), pkg, ver)
	if err != nil {
		return "", err
	}
	unpack, err := os.MkdirTemp(b.cacheDir(), "kernel-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(unpack)
	b.p.logf("dpkg-deb -x %s", filepath.Base(deb))
	if _, err := run(ctx, "", "dpkg-deb", "-x", deb, unpack); err != nil {
		return "", err
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(unpack, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		return "", fmt.Errorf("%s: expected one /boot/vmlinuz-*, found %d", pkg, len(vmlinuz))
	}
	release := strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	bz, err := os.ReadFile(vmlinuz[0])
	if err != nil {
		return "", err
	}
	elf, err := ExtractVmlinux(ctx, bz)
	if err != nil {
		return "", err
	}
	b.p.logf("vmlinux %s: %d MB (from %d MB bzImage)", release, len(elf)>>20, len(bz)>>20)
	if err := writeFileAtomic(KernelPath(b.o.DataDir), elf, 0o644); err != nil {
		return "", err
	}
	modRoot := filepath.Join(unpack, "lib", "modules", release)
	if _, err := os.Stat(modRoot); err != nil {
		modRoot = filepath.Join(unpack, "usr", "lib", "modules", release) // merged-/usr packaging
	}
	mods, err := selectModules(ctx, modRoot)
	if err != nil {
		return "", err
	}
	modDir := filepath.Join(dir, "modules")
	tmpMods := modDir + ".tmp"
	_ = os.RemoveAll(tmpMods)
	if err := os.MkdirAll(tmpMods, 0o755); err != nil {
		return "", err
	}
	var order []string
	for _, m := range mods {
		data, err := readModule(ctx, m.path)
		if err != nil {
			return "", err
		}
		name := m.name + ".ko"
		if err := os.WriteFile(filepath.Join(tmpMods, name), data, 0o644); err != nil {
			return "", err
		}
		order = append(order, name)
	}
	if err := os.WriteFile(filepath.Join(tmpMods, "modules.order"), []byte(strings.Join(order, "\n")+"\n"), 0o644); err != nil {
		return "", err
	}
	_ = os.RemoveAll(modDir)
	if err := os.Rename(tmpMods, modDir); err != nil {
		return "", err
	}
	b.p.logf("modules: %s", strings.Join(order, " "))
	if err := writeFileAtomic(filepath.Join(dir, "version"), []byte(release+"\n"), 0o644); err != nil {
		return "", err
	}
	return release, nil
}

func readShippedModules(dir string) ([]namedBlob, error) {
	b, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		return nil, err
	}
	var out []namedBlob
	for _, name := range strings.Fields(string(b)) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, namedBlob{name: name, data: data})
	}
	return out, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func fileSizes(dir string, names ...string) map[string]int64 {
	out := map[string]int64{}
	for _, n := range names {
		if fi, err := os.Stat(filepath.Join(dir, n)); err == nil {
			out[n] = fi.Size()
		}
	}
	return out
}
