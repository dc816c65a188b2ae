package yamldoc

import "testing"

func TestByteSizeString(t *testing.T) {
	for b, want := range map[ByteSize]string{0: "0B", 1: "1B", 1023: "1023B", KiB: "1KiB", 1536 * KiB: "1536KiB", 128 * MiB: "128MiB", 4 * GiB: "4GiB"} {
		if got := b.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(b), got, want)
		}
		if again, err := ParseByteSize(want); err != nil || again != b {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", want, again, err, int64(b))
		}
	}
}
