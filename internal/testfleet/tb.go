package testfleet

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// programTB lets a program (the demo) use the test helpers this package builds on
// (internal/testbed, testgit, testhaproxy), which take a testing.TB: it keeps their
// cleanups on a stack that Close runs, and turns Fatal and Skip into a panic that
// catch recovers as an error. Only the methods those helpers call are implemented;
// any other panics on the nil embedded interface.
type programTB struct {
	testing.TB // nil: only satisfies the interface's unexported method

	log io.Writer

	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// fatal is the panic value of programTB's Fatal and Skip.
type fatal struct{ err error }

func newProgramTB(log io.Writer) *programTB {
	if log == nil {
		log = io.Discard
	}
	return &programTB{log: log}
}

func (p *programTB) Helper()      {}
func (p *programTB) Name() string { return "testfleet" }

func (p *programTB) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}

// Close runs the cleanups, last registered first.
func (p *programTB) Close() {
	for {
		p.mu.Lock()
		n := len(p.cleanups)
		if n == 0 {
			p.mu.Unlock()
			return
		}
		f := p.cleanups[n-1]
		p.cleanups = p.cleanups[:n-1]
		p.mu.Unlock()
		f()
	}
}

func (p *programTB) Log(args ...any)                 { fmt.Fprintln(p.log, args...) }
func (p *programTB) Logf(format string, args ...any) { fmt.Fprintf(p.log, format+"\n", args...) }

func (p *programTB) Fail() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed = true
}

func (p *programTB) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *programTB) Error(args ...any) { p.Fail(); p.Log(args...) }
func (p *programTB) Errorf(format string, args ...any) {
	p.Fail()
	p.Logf(format, args...)
}

func (p *programTB) FailNow() { p.Fail(); panic(fatal{errors.New("failed")}) }
func (p *programTB) Fatal(args ...any) {
	p.Fail()
	panic(fatal{errors.New(fmt.Sprint(args...))})
}
func (p *programTB) Fatalf(format string, args ...any) {
	p.Fail()
	panic(fatal{fmt.Errorf(format, args...)})
}

func (p *programTB) SkipNow()      { panic(fatal{errors.New("skipped")}) }
func (p *programTB) Skipped() bool { return false }
func (p *programTB) Skip(args ...any) {
	panic(fatal{errors.New("cannot run: " + fmt.Sprint(args...))})
}
func (p *programTB) Skipf(format string, args ...any) {
	panic(fatal{fmt.Errorf("cannot run: "+format, args...)})
}

func (p *programTB) TempDir() string {
	d, err := os.MkdirTemp("", "testfleet-")
	if err != nil {
		p.Fatalf("temporary directory: %v", err)
	}
	p.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// catch runs f and returns the error of a programTB Fatal or Skip inside it. With a
// real *testing.T, Fatal ends the goroutine instead and catch never sees it.
func catch(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = fe.err
		}
	}()
	f()
	return nil
}
