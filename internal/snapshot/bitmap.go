package snapshot

import "math/bits"

// Bitmap is a fixed-size set of block indices (dirty blocks, touched pages).
type Bitmap struct {
	n     int
	words []uint64
}

// NewBitmap returns an empty bitmap for n indices.
func NewBitmap(n int) *Bitmap {
	return &Bitmap{n: n, words: make([]uint64, (n+63)/64)}
}

// Len is the number of indices the bitmap covers.
func (b *Bitmap) Len() int { return b.n }

// Set adds index i; out-of-range indices are ignored.
func (b *Bitmap) Set(i int) {
	if i >= 0 && i < b.n {
		b.words[i/64] |= 1 << (uint(i) % 64)
	}
}

// SetRange adds [from, to).
func (b *Bitmap) SetRange(from, to int) {
	for i := max(from, 0); i < min(to, b.n); i++ {
		b.Set(i)
	}
}

// Test reports whether index i is set.
func (b *Bitmap) Test(i int) bool {
	return i >= 0 && i < b.n && b.words[i/64]&(1<<(uint(i)%64)) != 0
}

// Count is the number of set indices.
func (b *Bitmap) Count() int {
	c := 0
	for _, w := range b.words {
		c += bits.OnesCount64(w)
	}
	return c
}

// Or adds every index set in o (which must cover the same length).
func (b *Bitmap) Or(o *Bitmap) {
	for i := range min(len(b.words), len(o.words)) {
		b.words[i] |= o.words[i]
	}
}

// NextSet returns the first set index >= i, or -1.
func (b *Bitmap) NextSet(i int) int {
	if i < 0 {
		i = 0
	}
	for i < b.n {
		w := b.words[i/64] >> (uint(i) % 64)
		if w != 0 {
			j := i + bits.TrailingZeros64(w)
			if j < b.n {
				return j
			}
			return -1
		}
		i = (i/64 + 1) * 64
	}
	return -1
}
