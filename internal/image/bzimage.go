package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"
)

// ExtractVmlinux returns the uncompressed kernel ELF inside a bzImage.
// Firecracker and QEMU's PVH entry boot the ELF directly, which skips the
// in-guest decompressor (slow under TCG). The setup header (Linux boot
// protocol >= 2.08) gives the payload's offset and length; the payload's
// magic selects the codec. Debian 12 compresses with LZ4 (legacy frame),
// decoded here in Go; gzip uses the standard library; xz, zstd, bzip2,
// lzma and lzo go through the system tools (xz-utils, zstd, ...).
func ExtractVmlinux(ctx context.Context, bz []byte) ([]byte, error) {
	if len(bz) < 0x250 || string(bz[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage (no HdrS setup header)")
	}
	if v := binary.LittleEndian.Uint16(bz[0x206:]); v < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x too old: no payload fields", v)
	}
	setupSects := int(bz[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	pmStart := (setupSects + 1) * 512
	off := pmStart + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if off < 0 || n < 8 || off+n > len(bz) {
		return nil, fmt.Errorf("payload [%d,+%d) outside the %d-byte image", off, n, len(bz))
	}
	payload := bz[off : off+n]
	// The kernel build appends the uncompressed size (le32) to every
	// payload; it lets us check the decompression end to end.
	want := int(binary.LittleEndian.Uint32(payload[n-4:]))
	body := payload[:n-4]
	var out []byte
	var err error
	switch {
	case bytes.HasPrefix(body, []byte{0x02, 0x21, 0x4c, 0x18}):
		out, err = unlz4Legacy(body, want)
	case bytes.HasPrefix(body, []byte{0x1f, 0x8b}):
		out, err = gunzip(body)
	case bytes.HasPrefix(body, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		out, err = execDecompress(ctx, body, "xz", "-dc", "--single-stream")
	case bytes.HasPrefix(body, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		out, err = execDecompress(ctx, body, "zstd", "-dcq")
	case bytes.HasPrefix(body, []byte("BZh")):
		out, err = execDecompress(ctx, body, "bzip2", "-dc")
	case bytes.HasPrefix(body, []byte{0x5d, 0x00, 0x00}):
		out, err = execDecompress(ctx, body, "xz", "--format=lzma", "-dc")
	case bytes.HasPrefix(body, []byte{0x89, 'L', 'Z', 'O'}):
		out, err = execDecompress(ctx, body, "lzop", "-dc")
	default:
		return nil, fmt.Errorf("unknown kernel payload codec (magic % x)", body[:4])
	}
	if err != nil {
		return nil, fmt.Errorf("decompress kernel: %w", err)
	}
	if len(out) != want {
		return nil, fmt.Errorf("decompressed kernel is %d bytes, header says %d", len(out), want)
	}
	if err := checkPVH(out); err != nil {
		return nil, err
	}
	return out, nil
}

// checkPVH verifies the ELF carries the Xen PVH entry note QEMU's microvm
// and Firecracker need to boot it directly.
func checkPVH(vmlinux []byte) error {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return fmt.Errorf("kernel is not an ELF: %w", err)
	}
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		for len(data) >= 12 {
			nsz := int(binary.LittleEndian.Uint32(data))
			dsz := int(binary.LittleEndian.Uint32(data[4:]))
			typ := binary.LittleEndian.Uint32(data[8:])
			nameEnd := 12 + align4(nsz)
			if nameEnd > len(data) {
				break
			}
			name := string(bytes.TrimRight(data[12:12+nsz], "\x00"))
			if name == "Xen" && typ == xenElfnotePhys32Entry {
				return nil
			}
			next := nameEnd + align4(dsz)
			if next > len(data) {
				break
			}
			data = data[next:]
		}
	}
	return errors.New("kernel ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): it cannot boot as vmlinux")
}

func align4(n int) int { return (n + 3) &^ 3 }

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	return io.ReadAll(zr)
}

func execDecompress(ctx context.Context, in []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s (install it with scripts/deps.sh)", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// unlz4Legacy decodes the LZ4 "legacy" frame the kernel uses: a magic,
// then blocks of (le32 compressed size, LZ4 block), each up to 8 MiB
// decompressed; the magic may repeat (concatenated streams).
func unlz4Legacy(b []byte, sizeHint int) ([]byte, error) {
	const magic = 0x184c2102
	out := make([]byte, 0, sizeHint)
	for len(b) >= 4 {
		n := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if n == magic {
			continue
		}
		if int(n) > len(b) {
			return nil, fmt.Errorf("lz4 block of %d bytes, %d left", n, len(b))
		}
		var err error
		out, err = lz4Block(out, b[:n])
		if err != nil {
			return nil, err
		}
		b = b[n:]
	}
	return out, nil
}

// lz4Block appends the decoding of one LZ4 block to dst. Matches may
// reach back into earlier blocks of the same stream (legacy frames are
// decoded with a shared window by the kernel too; offsets are bounded by
// 64 KiB so this is harmless when they don't).
func lz4Block(dst, src []byte) ([]byte, error) {
	for i := 0; i < len(src); {
		token := src[i]
		i++
		lit := int(token >> 4)
		if lit == 15 {
			for {
				if i >= len(src) {
					return nil, errors.New("lz4: truncated literal length")
				}
				c := src[i]
				i++
				lit += int(c)
				if c != 255 {
					break
				}
			}
		}
		if i+lit > len(src) {
			return nil, errors.New("lz4: literals past end of block")
		}
		dst = append(dst, src[i:i+lit]...)
		i += lit
		if i == len(src) {
			break // the last sequence has literals only
		}
		if i+2 > len(src) {
			return nil, errors.New("lz4: truncated offset")
		}
		off := int(src[i]) | int(src[i+1])<<8
		i += 2
		if off == 0 || off > len(dst) {
			return nil, fmt.Errorf("lz4: bad match offset %d", off)
		}
		ml := int(token & 15)
		if ml == 15 {
			for {
				if i >= len(src) {
					return nil, errors.New("lz4: truncated match length")
				}
				c := src[i]
				i++
				ml += int(c)
				if c != 255 {
					break
				}
			}
		}
		ml += 4
		start := len(dst) - off
		for k := 0; k < ml; k++ { // byte by byte: matches may overlap their output
			dst = append(dst, dst[start+k])
		}
	}
	return dst, nil
}
