package dataplane

import (
	"bytes"
	"testing"
)

// FuzzFaultCorpus: any two byte strings survive MarshalFaultCorpus and
// UnmarshalFaultCorpus unchanged, and UnmarshalFaultCorpus takes any file
// (a corpus directory is a place others write to) with a value or an error,
// never a panic.
func FuzzFaultCorpus(f *testing.F) {
	f.Add([]byte("frame"), []byte{1, 0, 0, 0, 0, 0, 34, 0, 16, 0}, []byte("go test fuzz v1\n[]byte(\"a\")\n[]byte(\"\")\n"))
	f.Add([]byte{}, []byte(nil), []byte("go test fuzz v1\n[]byte(`raw`)\n[]byte(\"\\x00\")\n"))
	f.Add([]byte("\"\\)\n"), []byte("\xff"), []byte("not a corpus file"))
	f.Fuzz(func(t *testing.T, frame, vnet, file []byte) {
		gf, gv, err := UnmarshalFaultCorpus(MarshalFaultCorpus(frame, vnet))
		if err != nil || !bytes.Equal(gf, frame) || !bytes.Equal(gv, vnet) {
			t.Fatalf("round trip of %q, %q: %q, %q, %v", frame, vnet, gf, gv, err)
		}
		_, _, _ = UnmarshalFaultCorpus(file)
	})
}
