package wire

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

// pair returns two connected Unix stream sockets.
func pair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestDescriptorTravelsWithItsFrame: two frames back to back, the second
// with a descriptor; each Read gets its own frame, and the descriptor
// arrives with the second.
func TestDescriptorTravelsWithItsFrame(t *testing.T) {
	a, b := pair(t)
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("payload")
	defer f.Close()
	if err := Write(a, Response{V: Version, OK: true}); err != nil {
		t.Fatal(err)
	}
	if err := Write(a, Response{V: Version, OK: true, Files: 1, Size: 7}, f); err != nil {
		t.Fatal(err)
	}
	var r1, r2 Response
	files, err := Read(b, &r1)
	if err != nil || len(files) != 0 || !r1.OK {
		t.Fatalf("first frame: %+v, %d files, %v", r1, len(files), err)
	}
	files, err = Read(b, &r2)
	if err != nil || len(files) != 1 || r2.Size != 7 {
		t.Fatalf("second frame: %+v, %d files, %v", r2, len(files), err)
	}
	buf := make([]byte, 7)
	if _, err := files[0].ReadAt(buf, 0); err != nil || string(buf) != "payload" {
		t.Errorf("the received descriptor reads %q, %v", buf, err)
	}
	files[0].Close()
	a.Close()
	if _, err := Read(b, &r1); !errors.Is(err, io.EOF) {
		t.Errorf("after close: %v, want EOF", err)
	}
}

func TestBadFrames(t *testing.T) {
	for name, data := range map[string][]byte{
		"zero length":   {0, 0, 0, 0},
		"too long":      {0, 1, 0, 1},
		"not JSON":      append([]byte{0, 0, 0, 3}, "abc"...),
		"trailing data": append([]byte{0, 0, 0, 5}, "{} {}"...),
		"unknown field": append([]byte{0, 0, 0, 7}, `{"x":1}`...),
		"cut short":     append([]byte{0, 0, 0, 9}, `{"v"`...),
	} {
		a, b := pair(t)
		a.Write(data)
		a.CloseWrite()
		var r Request
		if _, err := Read(b, &r); err == nil {
			t.Errorf("%s: accepted as %+v", name, r)
		}
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add(append([]byte{0, 0, 0, 28}, `{"v":1,"op":"open","id":"s"}`...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := pair(t)
		go func() { a.Write(data); a.CloseWrite() }()
		for range 4 {
			var r Request
			files, err := Read(b, &r)
			if err != nil {
				if len(files) != 0 {
					t.Fatal("files returned with an error")
				}
				return
			}
			if len(files) != 0 {
				t.Fatal("descriptors out of nowhere")
			}
		}
	})
}
