package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Segment files are named after the sequence number of their first record:
// 20 decimal digits and ".seg". A quarantined segment keeps its name with
// ".quarantined" (and a counter when that name is taken) appended.
const (
	segmentExt    = ".seg"
	quarantineExt = ".quarantined"
	cursorName    = "cursor"
)

func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segmentExt) }

// parseSegmentName returns the first sequence number a segment file name
// claims, and whether the name is a segment's at all.
func parseSegmentName(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(base) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(base, 10, 64)
	return n, err == nil
}

// dirListing is what a spool folder holds.
type dirListing struct {
	segments    []segFile // sorted by first sequence number
	quarantined []segFile // sorted by the first sequence number of the original name
}

type segFile struct {
	name  string
	first uint64
	size  int64
}

func listDir(dir string) (dirListing, error) {
	var l dirListing
	ents, err := os.ReadDir(dir)
	if err != nil {
		return l, fmt.Errorf("audit spool: %w", err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		name := e.Name()
		info, err := e.Info()
		if err != nil {
			return l, fmt.Errorf("audit spool: %w", err)
		}
		if first, ok := parseSegmentName(name); ok {
			l.segments = append(l.segments, segFile{name: name, first: first, size: info.Size()})
			continue
		}
		if i := strings.Index(name, segmentExt+quarantineExt); i > 0 {
			if first, ok := parseSegmentName(name[:i+len(segmentExt)]); ok {
				l.quarantined = append(l.quarantined, segFile{name: name, first: first, size: info.Size()})
			}
		}
	}
	sort.Slice(l.segments, func(i, j int) bool { return l.segments[i].first < l.segments[j].first })
	sort.Slice(l.quarantined, func(i, j int) bool { return l.quarantined[i].first < l.quarantined[j].first })
	return l, nil
}

// FrameError says where a segment's framing broke.
type FrameError struct {
	// Offset is the byte offset of the bad frame in its file.
	Offset int64
	// Torn is true when the frame is cut short by the end of the file (or
	// is the file's last frame and fails its checksum): what a crash in
	// the middle of a write leaves.
	Torn bool
	// Short is true when the frame is cut short by the end of the file
	// (a write that never completed), not merely failing its checksum.
	Short bool
	// Reason says what is wrong.
	Reason string
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("offset %d: %s", e.Offset, e.What())
}

// What says what is wrong, without the offset.
func (e *FrameError) What() string {
	if e.Torn {
		return "torn record: " + e.Reason
	}
	return "corrupt record: " + e.Reason
}

// errStop ends a scan early without error.
var errStop = errors.New("stop")

// scanFrames reads the frames of r (positioned at byte offset base of its
// file, with size bytes left) and calls fn with each good record, its offset
// and the offset just past it. It returns the offset after the last good
// frame and a *FrameError at the first bad one, or fn's error.
func scanFrames(r io.Reader, base, size int64, fn func(rec Record, off, end int64) error) (int64, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	off := base
	end := base + size
	var hdr [frameHeader]byte
	var body []byte
	for off < end {
		n, err := io.ReadFull(br, hdr[:])
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return off, &FrameError{Offset: off, Torn: true, Short: true, Reason: fmt.Sprintf("%d of %d header bytes", n, frameHeader)}
			}
			return off, fmt.Errorf("offset %d: %w", off, err)
		}
		length := int64(binary.BigEndian.Uint32(hdr[0:4]))
		sum := binary.BigEndian.Uint32(hdr[4:8])
		if length < bodyFixed || length > maxRecordBytes {
			// A crash can leave the file's size ahead of its data: zeros
			// from here to the end are a torn tail, however long.
			if length == 0 && sum == 0 && zerosTo(br, end-off-frameHeader) {
				return off, &FrameError{Offset: off, Torn: true, Short: true, Reason: "zero-filled tail"}
			}
			return off, &FrameError{Offset: off, Reason: fmt.Sprintf("bad length %d", length)}
		}
		frameEnd := off + frameHeader + length
		if frameEnd > end {
			return off, &FrameError{Offset: off, Torn: true, Short: true, Reason: fmt.Sprintf("record needs %d bytes, %d present", frameHeader+length, end-off)}
		}
		if cap(body) < int(length) {
			body = make([]byte, length)
		}
		body = body[:length]
		if _, err := io.ReadFull(br, body); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return off, &FrameError{Offset: off, Torn: true, Short: true, Reason: "file ends inside the record"}
			}
			return off, fmt.Errorf("offset %d: %w", off, err)
		}
		if crc32.Checksum(body, crcTable) != sum {
			return off, &FrameError{Offset: off, Torn: frameEnd == end, Reason: "CRC-32C mismatch"}
		}
		rec, err := decodeBody(body)
		if err != nil {
			return off, &FrameError{Offset: off, Reason: err.Error()}
		}
		if err := fn(rec, off, frameEnd); err != nil {
			return off, err
		}
		off = frameEnd
	}
	return off, nil
}

// zerosTo reports whether the next n bytes of r are all zero.
func zerosTo(r io.Reader, n int64) bool {
	var buf [4096]byte
	for n > 0 {
		m, err := io.ReadFull(r, buf[:min(n, int64(len(buf)))])
		for _, b := range buf[:m] {
			if b != 0 {
				return false
			}
		}
		if err != nil {
			return false
		}
		n -= int64(m)
	}
	return true
}

// segSummary is what a scan of one segment file found.
type segSummary struct {
	count     int
	first     uint64
	last      uint64
	lastHash  [32]byte
	goodEnd   int64
	lastTime  int64
	frameErr  *FrameError
	seqBroken string // a sequence gap inside the file, or a first record not matching the name
	// missing are the ranges that repair records in the file say are
	// missing (action missing).
	missing [][2]uint64
}

// scanSegment checks one segment file: framing, and sequence numbers
// following the name and each other. It stops at the first problem.
func scanSegment(path string, nameFirst uint64) (segSummary, error) {
	var s segSummary
	f, err := os.Open(path)
	if err != nil {
		return s, fmt.Errorf("audit spool: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return s, fmt.Errorf("audit spool: %w", err)
	}
	end, err := scanFrames(f, 0, st.Size(), func(rec Record, off, _ int64) error {
		want := nameFirst + uint64(s.count)
		if rec.Seq != want {
			s.frameErr = &FrameError{Offset: off, Reason: fmt.Sprintf("sequence %d where %d was due (%s)", rec.Seq, want, filepath.Base(path))}
			s.seqBroken = s.frameErr.Reason
			return errStop
		}
		if s.count == 0 {
			s.first = rec.Seq
		}
		s.count++
		s.last = rec.Seq
		s.lastHash = rec.Hash
		s.lastTime = rec.Time.UnixNano()
		if rec.Name == NameRepair && rec.Field("action") == RepairMissing {
			from, _ := rec.Field("first_missing_seq").(uint64)
			to, _ := rec.Field("last_missing_seq").(uint64)
			s.missing = append(s.missing, [2]uint64{from, to})
		}
		return nil
	})
	s.goodEnd = end
	var fe *FrameError
	switch {
	case errors.Is(err, errStop):
	case errors.As(err, &fe):
		s.frameErr = fe
	case err != nil:
		return s, fmt.Errorf("audit spool: %s: %w", path, err)
	}
	return s, nil
}
