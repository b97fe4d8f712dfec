package qemu

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// QEMU's migration stream (migration/savevm.c, migration/ram.c), the parts
// splitRAM reads. Everything is big-endian.
const (
	streamMagic   = 0x5145564d // "QEVM"
	streamVersion = 3

	secEOF           = 0x00
	secStart         = 0x01
	secPart          = 0x02
	secEnd           = 0x03
	secFull          = 0x04
	secSubsection    = 0x05
	secConfiguration = 0x07
	secFooter        = 0x7e

	ramFlagZero      = 0x02
	ramFlagMemSize   = 0x04
	ramFlagPage      = 0x08
	ramFlagEOS       = 0x10
	ramFlagContinue  = 0x20
	ramFlagMultifdFl = 0x200 // QEMU 8.2+: "multifd flush", no payload
	ramFlagsKnown    = ramFlagZero | ramFlagMemSize | ramFlagPage | ramFlagEOS | ramFlagContinue | ramFlagMultifdFl

	targetPageSize = 4096 // x86
)

// splitRAM copies a migration stream from r to w without the pages of RAM
// block `block`, handing those to page instead. The stream must have been
// produced with x-ignore-shared on (so its RAM setup lists each block's
// address, as a restore with x-ignore-shared expects) and without
// compression, xbzrle, multifd or postcopy. What it writes is then exactly
// what QEMU writes when that block is a shared file skipped by
// x-ignore-shared: device state only, restorable with the block mapped
// from a file holding the pages.
//
// Sections are parsed up to the end of RAM (RAM's sections always come
// before the non-iterative device sections); the rest is copied as is.
func splitRAM(r io.Reader, w io.Writer, block string, page vmm.PageFunc) error {
	s := &splitter{r: bufio.NewReaderSize(r, 1<<20), w: bufio.NewWriterSize(w, 256<<10), block: block, page: page, ramID: -1}
	if err := s.run(); err != nil {
		return err
	}
	return s.w.Flush()
}

type splitter struct {
	r     *bufio.Reader
	w     *bufio.Writer
	block string
	page  vmm.PageFunc
	buf   [targetPageSize]byte
	names []string // RAM blocks listed by the stream
	ramID int64
	cur   string // RAM block of the last page (RAM_SAVE_FLAG_CONTINUE)
	found bool   // a MEM_SIZE record listed block
}

func (s *splitter) read(n int) ([]byte, error) {
	b := s.buf[:n]
	if _, err := io.ReadFull(s.r, b); err != nil {
		return nil, fmt.Errorf("migration stream: %w", err)
	}
	return b, nil
}

// copyN reads n bytes and writes them out.
func (s *splitter) copyN(n int) ([]byte, error) {
	b, err := s.read(n)
	if err != nil {
		return nil, err
	}
	_, err = s.w.Write(b)
	return b, err
}

func (s *splitter) copyByte() (byte, error) {
	b, err := s.copyN(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (s *splitter) copyBE32() (uint32, error) {
	b, err := s.copyN(4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b), nil
}

func (s *splitter) copyBE64() (uint64, error) {
	b, err := s.copyN(8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b), nil
}

// copyStr copies a string with a one-byte length.
func (s *splitter) copyStr() (string, error) {
	n, err := s.copyByte()
	if err != nil {
		return "", err
	}
	b, err := s.copyN(int(n))
	return string(b), err
}

func (s *splitter) run() error {
	if m, err := s.copyBE32(); err != nil || m != streamMagic {
		return fmt.Errorf("migration stream: bad magic %#x (%v)", m, err)
	}
	if v, err := s.copyBE32(); err != nil || v != streamVersion {
		return fmt.Errorf("migration stream: version %d (%v)", v, err)
	}
	for {
		typ, err := s.r.ReadByte()
		if err != nil {
			return fmt.Errorf("migration stream: %w", err)
		}
		switch typ {
		case secConfiguration:
			if err := s.w.WriteByte(typ); err != nil {
				return err
			}
			if err := s.configuration(); err != nil {
				return err
			}
		case secStart, secFull:
			// Peek at the section name before copying anything: a device
			// section means RAM is over and the rest is copied verbatim.
			hdr, err := s.r.Peek(5)
			if err != nil {
				return fmt.Errorf("migration stream: %w", err)
			}
			name, err := s.r.Peek(5 + int(hdr[4]))
			if err != nil {
				return fmt.Errorf("migration stream: %w", err)
			}
			if string(name[5:]) != "ram" {
				if s.ramID < 0 || typ == secStart {
					return fmt.Errorf("migration stream: section %q before RAM ended (only RAM may be iterative)", name[5:])
				}
				return s.rest(typ)
			}
			if err := s.w.WriteByte(typ); err != nil {
				return err
			}
			id, err := s.copyBE32()
			if err != nil {
				return err
			}
			if _, err := s.copyStr(); err != nil {
				return err
			}
			if _, err := s.copyN(8); err != nil { // instance id, version id
				return err
			}
			s.ramID = int64(id)
			if err := s.ram(); err != nil {
				return err
			}
			if err := s.footer(id); err != nil {
				return err
			}
		case secPart, secEnd:
			if err := s.w.WriteByte(typ); err != nil {
				return err
			}
			id, err := s.copyBE32()
			if err != nil {
				return err
			}
			if int64(id) != s.ramID {
				return fmt.Errorf("migration stream: iterative section %d is not RAM", id)
			}
			if err := s.ram(); err != nil {
				return err
			}
			if err := s.footer(id); err != nil {
				return err
			}
		default:
			if s.ramID < 0 {
				return fmt.Errorf("migration stream: section type %#x before RAM", typ)
			}
			return s.rest(typ)
		}
	}
}

// rest copies the remaining stream (device sections, EOF, the JSON
// description) as it is.
func (s *splitter) rest(typ byte) error {
	if !s.found {
		return fmt.Errorf("migration stream: RAM block %q not in the stream (blocks: %q)", s.block, s.names)
	}
	if err := s.w.WriteByte(typ); err != nil {
		return err
	}
	_, err := io.Copy(s.w, s.r)
	return err
}

// configuration copies the "configuration" vmstate: the machine type and
// the subsections QEMU 7.2-10 may add.
func (s *splitter) configuration() error {
	n, err := s.copyBE32()
	if err != nil {
		return err
	}
	if _, err := s.copyN(int(n)); err != nil {
		return err
	}
	for {
		b, err := s.r.Peek(1)
		if err != nil {
			return fmt.Errorf("migration stream: %w", err)
		}
		if b[0] != secSubsection {
			return nil
		}
		if _, err := s.copyByte(); err != nil {
			return err
		}
		name, err := s.copyStr()
		if err != nil {
			return err
		}
		if _, err := s.copyBE32(); err != nil { // version
			return err
		}
		switch name {
		case "configuration/target-page-bits":
			_, err = s.copyN(4)
		case "configuration/uuid":
			_, err = s.copyN(16)
		case "configuration/capabilities":
			var count uint32
			if count, err = s.copyBE32(); err != nil {
				return err
			}
			for range count {
				if _, err = s.copyStr(); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("migration stream: unknown configuration subsection %q", name)
		}
		if err != nil {
			return err
		}
	}
}

func (s *splitter) footer(id uint32) error {
	b, err := s.r.Peek(1)
	if err != nil {
		return fmt.Errorf("migration stream: %w", err)
	}
	if b[0] != secFooter {
		return nil // machine types without section footers
	}
	if _, err := s.copyByte(); err != nil {
		return err
	}
	got, err := s.copyBE32()
	if err != nil {
		return err
	}
	if got != id {
		return fmt.Errorf("migration stream: footer of section %d in section %d", got, id)
	}
	return nil
}

// ram handles one RAM section's records up to RAM_SAVE_FLAG_EOS.
func (s *splitter) ram() error {
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
			return fmt.Errorf("migration stream: %w", err)
		}
		hb := hdr[:]
		v := binary.BigEndian.Uint64(hb)
		flags := v & (targetPageSize - 1)
		addr := v &^ (targetPageSize - 1)
		if flags&^ramFlagsKnown != 0 {
			return fmt.Errorf("migration stream: RAM flags %#x (compression, xbzrle or RDMA are not supported)", flags)
		}
		switch {
		case flags&ramFlagMemSize != 0:
			if _, err := s.w.Write(hb); err != nil {
				return err
			}
			if err := s.memSize(v &^ (targetPageSize - 1)); err != nil {
				return err
			}
			continue
		case flags&ramFlagEOS != 0:
			_, err := s.w.Write(hb)
			return err
		case flags&(ramFlagZero|ramFlagPage) == 0:
			if flags&ramFlagMultifdFl != 0 {
				if _, err := s.w.Write(hb); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("migration stream: RAM record without page (flags %#x)", flags)
		}
		blk := s.cur
		var name []byte
		if flags&ramFlagContinue == 0 {
			n, err := s.r.ReadByte()
			if err != nil {
				return fmt.Errorf("migration stream: %w", err)
			}
			name = make([]byte, 1+int(n))
			name[0] = n
			if _, err := io.ReadFull(s.r, name[1:]); err != nil {
				return fmt.Errorf("migration stream: %w", err)
			}
			blk = string(name[1:])
			s.cur = blk
		}
		var (
			data []byte
			err  error
		)
		zero := flags&ramFlagZero != 0
		if zero {
			if data, err = s.read(1); err != nil {
				return err
			}
		} else if data, err = s.read(targetPageSize); err != nil {
			return err
		}
		if blk == s.block {
			if zero && data[0] != 0 {
				return fmt.Errorf("migration stream: fill page %#x (only zero pages exist since QEMU 2.1)", data[0])
			}
			if zero {
				data = nil
			}
			if err := s.page(int64(addr), data); err != nil {
				return err
			}
			continue
		}
		if blk == "" {
			return errors.New("migration stream: page continues no block")
		}
		for _, b := range [][]byte{hb, name, data} {
			if _, err := s.w.Write(b); err != nil {
				return err
			}
		}
	}
}

// memSize copies the RAM setup record: the block list (name, length and,
// with x-ignore-shared, address) whose lengths add up to total.
func (s *splitter) memSize(total uint64) error {
	for total > 0 {
		name, err := s.copyStr()
		if err != nil {
			return err
		}
		length, err := s.copyBE64()
		if err != nil {
			return err
		}
		if _, err := s.copyN(8); err != nil { // address (x-ignore-shared)
			return err
		}
		s.names = append(s.names, name)
		if name == s.block {
			s.found = true
		}
		if length > total {
			return fmt.Errorf("migration stream: RAM block %q of %d bytes exceeds the total", name, length)
		}
		total -= length
	}
	return nil
}
