// Package rawfile reads and creates small files relative to open directory
// file descriptors with raw system calls.
//
// berth-generator makes about a dozen file system calls per machine, for
// every machine, at every boot, from one goroutine per CPU. Through
// syscall.Syscall each call tells the Go scheduler it may block, and the
// runtime's monitor then takes the processor away from a worker that stays
// in the kernel for a few microseconds and hands it back afterwards. With
// nothing else to run that is pure overhead: measured in bench/, raw calls
// cut the generator's time by about 6%. The price is that a call blocked on
// a slow disk holds its processor, which only delays that worker.
package rawfile

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CWD, as a directory fd, makes names relative to the working directory.
const CWD = unix.AT_FDCWD

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	for {
		fd, _, e := unix.RawSyscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			uintptr(flags|unix.O_CLOEXEC|unix.O_LARGEFILE), uintptr(mode), 0, 0)
		if e != unix.EINTR {
			return int(fd), errnoErr(e)
		}
	}
}

func closeFd(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errnoErr(e)
}

// MaxRead is the largest file ReadAt reads: far beyond any configuration
// file, and a bound on what a mistaken one costs.
const MaxRead = 64 << 20

// Errors of ReadAt for what is not a file to read.
var (
	ErrNotRegular = errors.New("not a regular file")
	ErrTooLarge   = fmt.Errorf("larger than %d MiB", MaxRead>>20)
)

// ReadAt returns the contents of the regular file name below dirfd, in a
// handful of system calls (os.ReadFile takes more, and walks the whole
// path). It opens without blocking, so a FIFO or a device there cannot
// hang the caller (the generator, at boot), and refuses anything but a
// regular file of at most MaxRead bytes.
func ReadAt(dirfd int, name string) ([]byte, error) {
	fd, err := openat(dirfd, name, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer closeFd(fd)
	var st unix.Stat_t
	if _, _, e := unix.RawSyscall(unix.SYS_FSTAT, uintptr(fd), uintptr(unsafe.Pointer(&st)), 0); e != 0 {
		return nil, e
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, ErrNotRegular
	}
	if st.Size > MaxRead {
		return nil, ErrTooLarge
	}
	buf := make([]byte, 0, max(1024, st.Size+1))
	for {
		if len(buf) >= MaxRead {
			return nil, ErrTooLarge // it grew while being read
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		free := buf[len(buf):cap(buf)]
		n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(free))), uintptr(len(free)))
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return nil, e
		case n == 0:
			return buf, nil
		}
		buf = buf[:len(buf)+int(n)]
		// Asked for one byte more than fstat saw and got exactly what it
		// saw: that is all of it, and the read for end of file is saved
		// (one system call in fifteen of a generator run).
		if len(buf) == int(st.Size) && int(n) < len(free) {
			return buf, nil
		}
	}
}

// CreateAt writes content to a new or truncated file name below dirfd,
// removing it again on error.
func CreateAt(dirfd int, name string, content []byte) error {
	fd, err := openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	err = writeAll(fd, content)
	if cerr := closeFd(fd); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(dirfd, name, 0)
	}
	return err
}

// writeAll writes content to fd.
func writeAll(fd int, content []byte) error {
	for len(content) > 0 {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(content))), uintptr(len(content)))
		switch e {
		case 0:
			content = content[n:]
		case unix.EINTR:
		default:
			return e
		}
	}
	return nil
}

// MkdirAt creates directory name below dirfd.
func MkdirAt(dirfd int, name string, mode uint32) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, e := unix.RawSyscall(unix.SYS_MKDIRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(mode))
	return errnoErr(e)
}

// SymlinkAt creates name below dirfd as a symlink to target.
func SymlinkAt(target string, dirfd int, name string) error {
	t, err := unix.BytePtrFromString(target)
	if err != nil {
		return err
	}
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, e := unix.RawSyscall(unix.SYS_SYMLINKAT, uintptr(unsafe.Pointer(t)), uintptr(dirfd), uintptr(unsafe.Pointer(p)))
	return errnoErr(e)
}
