package qemu

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// streamBuilder writes a migration stream the way QEMU lays one out.
type streamBuilder struct{ bytes.Buffer }

func (b *streamBuilder) u8(v byte)     { b.WriteByte(v) }
func (b *streamBuilder) be32(v uint32) { b.Write(binary.BigEndian.AppendUint32(nil, v)) }
func (b *streamBuilder) be64(v uint64) { b.Write(binary.BigEndian.AppendUint64(nil, v)) }
func (b *streamBuilder) str(s string)  { b.u8(byte(len(s))); b.WriteString(s) }

func (b *streamBuilder) header() {
	b.be32(streamMagic)
	b.be32(streamVersion)
	b.u8(secConfiguration)
	b.be32(uint32(len("microvm")))
	b.WriteString("microvm")
	b.u8(secSubsection)
	b.str("configuration/capabilities")
	b.be32(1)
	b.be32(1)
	b.str("x-ignore-shared")
}

func (b *streamBuilder) ramStart(blocks map[string]uint64, order []string) {
	b.u8(secStart)
	b.be32(2)
	b.str("ram")
	b.be32(0)
	b.be32(4)
	var total uint64
	for _, n := range order {
		total += blocks[n]
	}
	b.be64(total | ramFlagMemSize)
	for _, n := range order {
		b.str(n)
		b.be64(blocks[n])
		b.be64(0) // address
	}
	b.be64(ramFlagEOS)
	b.footer(2)
}

func (b *streamBuilder) footer(id uint32) { b.u8(secFooter); b.be32(id) }

// page writes a RAM page record; block "" continues the previous block.
func (b *streamBuilder) page(block string, off uint64, data []byte) {
	flags := uint64(ramFlagPage)
	if data == nil {
		flags = ramFlagZero
	}
	if block == "" {
		flags |= ramFlagContinue
	}
	b.be64(off | flags)
	if block != "" {
		b.str(block)
	}
	if data == nil {
		b.u8(0)
	} else {
		b.Write(data)
	}
}

func fill(c byte) []byte { return bytes.Repeat([]byte{c}, targetPageSize) }

func TestSplitRAM(t *testing.T) {
	blocks := map[string]uint64{"pc.bios": targetPageSize, "mem": 4 * targetPageSize}
	order := []string{"pc.bios", "mem"}
	var in, want streamBuilder
	in.header()
	want.header()
	in.ramStart(blocks, order)
	want.ramStart(blocks, order)
	// PART: mem pages 0 (data), 1 (zero, continued), the bios page (named,
	// kept), mem page 3 (named again).
	in.u8(secPart)
	in.be32(2)
	in.page("mem", 0, fill('a'))
	in.page("", 1*targetPageSize, nil)
	in.page("pc.bios", 0, fill('b'))
	in.page("mem", 3*targetPageSize, fill('c'))
	in.be64(ramFlagEOS)
	in.footer(2)
	want.u8(secPart)
	want.be32(2)
	want.page("pc.bios", 0, fill('b'))
	want.be64(ramFlagEOS)
	want.footer(2)
	// END, then a device section and EOF, copied as they are.
	for _, b := range []*streamBuilder{&in, &want} {
		b.u8(secEnd)
		b.be32(2)
		b.be64(ramFlagEOS)
		b.footer(2)
		b.u8(secFull)
		b.be32(3)
		b.str("cpu")
		b.be32(0)
		b.be32(1)
		b.WriteString("\x00\x05\x7e opaque device state")
		b.u8(secEOF)
	}
	got := map[int64]byte{}
	var out bytes.Buffer
	err := splitRAM(bytes.NewReader(in.Bytes()), &out, "mem", func(off int64, data []byte) error {
		if data == nil {
			got[off] = 0
		} else {
			got[off] = data[0]
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want.Bytes()) {
		t.Fatalf("split stream differs:\n got %q\nwant %q", out.Bytes(), want.Bytes())
	}
	wantPages := map[int64]byte{0: 'a', targetPageSize: 0, 3 * targetPageSize: 'c'}
	if len(got) != len(wantPages) {
		t.Fatalf("pages %v, want %v", got, wantPages)
	}
	for k, v := range wantPages {
		if got[k] != v {
			t.Fatalf("pages %v, want %v", got, wantPages)
		}
	}
}

func TestSplitRAMRejects(t *testing.T) {
	blocks := map[string]uint64{"mem": targetPageSize}
	cases := []struct {
		name  string
		build func(b *streamBuilder)
		want  string
	}{
		{"bad magic", func(b *streamBuilder) { b.be32(1); b.be32(3) }, "bad magic"},
		{"truncated", func(b *streamBuilder) { b.header(); b.ramStart(blocks, []string{"mem"}); b.u8(secPart) }, "EOF"},
		{"compressed page", func(b *streamBuilder) {
			b.header()
			b.ramStart(blocks, []string{"mem"})
			b.u8(secPart)
			b.be32(2)
			b.be64(0x100 | ramFlagPage)
		}, "flags"},
		{"continue without block", func(b *streamBuilder) {
			b.header()
			b.ramStart(map[string]uint64{"other": targetPageSize}, []string{"other"})
			b.u8(secPart)
			b.be32(2)
			b.page("", 0, fill('x'))
		}, "continues no block"},
		{"device section before RAM", func(b *streamBuilder) {
			b.header()
			b.u8(secFull)
			b.be32(3)
			b.str("cpu")
		}, "before RAM"},
		{"block missing", func(b *streamBuilder) {
			b.header()
			b.ramStart(map[string]uint64{"other": targetPageSize}, []string{"other"})
			b.u8(secEOF)
		}, `"mem" not in the stream`},
		{"wrong footer", func(b *streamBuilder) {
			b.header()
			b.u8(secStart)
			b.be32(2)
			b.str("ram")
			b.be32(0)
			b.be32(4)
			b.be64(ramFlagEOS)
			b.footer(9)
		}, "footer"},
		{"unknown configuration subsection", func(b *streamBuilder) {
			b.be32(streamMagic)
			b.be32(streamVersion)
			b.u8(secConfiguration)
			b.be32(1)
			b.WriteString("m")
			b.u8(secSubsection)
			b.str("configuration/new")
			b.be32(1)
		}, "unknown configuration subsection"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b streamBuilder
			tc.build(&b)
			err := splitRAM(bytes.NewReader(b.Bytes()), &bytes.Buffer{}, "mem", func(int64, []byte) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestPrivateMemFromCmdline(t *testing.T) {
	cases := []struct {
		args []string
		path string
		ok   bool
	}{
		{[]string{"qemu", "-object", "memory-backend-file,id=mem,size=256M,mem-path=/d/ram-1,share=off", "-M", "microvm"}, "/d/ram-1", true},
		{[]string{"qemu", "-object", "memory-backend-file,id=mem,size=256M,mem-path=/a,,b/ram,share=off"}, "/a,b/ram", true},
		{[]string{"qemu", "-object", "memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/x.ram,share=on"}, "", false},
		{[]string{"qemu", "-m", "256M"}, "", false},
	}
	for _, tc := range cases {
		path, ok := privateMemFromCmdline(strings.Join(tc.args, "\x00") + "\x00")
		if path != tc.path && tc.ok || ok != tc.ok {
			t.Errorf("%q: %q %v, want %q %v", tc.args, path, ok, tc.path, tc.ok)
		}
	}
}
