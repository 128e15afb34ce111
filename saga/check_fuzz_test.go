package saga_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/troupehq/troupe/saga"
)

// registryName is the documented shape of the names in a registry file:
// lower-case words separated by dots (saga.nameRE).
var registryName = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$`)

// registryProblems lists, independently of ReadRegistry's code, what its
// docs say is wrong with a registry file that is one well-formed JSON
// value decoding into a saga.Registry (file): each is a text the error
// must contain. A handler named twice in one service must consume the
// same events both times. Unknown fields, which a lenient decode drops,
// are a problem only ReadRegistry itself can see.
func registryProblems(file saga.Registry) []string {
	var out []string
	seen := map[[2]string][]string{}
	for _, sh := range file.Services {
		if !registryName.MatchString(sh.Service) {
			out = append(out, fmt.Sprintf("service name %q", sh.Service))
		}
		for _, h := range sh.Handlers {
			if !registryName.MatchString(h.Name) {
				out = append(out, fmt.Sprintf("handler name %q", h.Name))
			}
			if len(h.Events) == 0 {
				out = append(out, "consumes no event")
			}
			for _, e := range h.Events {
				if !registryName.MatchString(e) {
					out = append(out, fmt.Sprintf("event name %q", e))
				}
			}
			key, events := [2]string{sh.Service, h.Name}, slices.Sorted(slices.Values(h.Events))
			if had, ok := seen[key]; ok && !slices.Equal(had, events) {
				out = append(out, "here and")
			}
			seen[key] = events
		}
	}
	return out
}

// FuzzRegistryFile reads arbitrary bytes as a registry file, whole and in
// chunks. ReadRegistry must refuse, with an error that starts "saga: "
// and names one of the documented problems, every input that is not
// exactly one JSON value or that has a bad name, a handler without
// events or a conflict; what it accepts must hold exactly the file's
// services and handlers, sorted, each handler's events sorted, and must
// read back to itself from what WriteRegistry would write for it.
func FuzzRegistryFile(f *testing.F) {
	seeds := []string{
		`{"services": [{"service": "payment", "handlers": [{"name": "charge", "events": ["order.placed"]}]}]}`,
		`{"services": [{"service": "pay", "handlers": [{"name": "h", "events": ["b.b", "a.a"]}, {"name": "a", "events": ["x"]}]},
			{"service": "cars", "handlers": []}, {"service": "pay", "handlers": [{"name": "h", "events": ["a.a", "b.b"]}]}]}`,
		`{"services": [{"service": "pay", "handlers": null}], "services": []}`,
		`{"Services": [{"SERVICE": "pay", "Handlers": [{"NAME": "h", "Events": ["a"]}]}]}`,
		`{"services": []}` + "\n",
		`{}`,
		`null`,
		``,
		`{`,
		`[]`,
		`{"services": [], "extra": 1}`,
		`{"services": []} {}`,
		`{"services": []}]`,
		`{"services": []} }`,
		`{"services": []} x`,
		`{}]0`, // found by the fuzzer: a stray ']' after the object was read as the end
		`{"services": [{"service": "Pay Ment", "handlers": []}]}`,
		`{"services": [{"service": "pay", "handlers": [{"name": "", "events": ["a.b"]}]}]}`,
		`{"services": [{"service": "pay", "handlers": [{"name": "h", "events": []}]}]}`,
		`{"services": [{"service": "pay", "handlers": [{"name": "h", "events": ["A"]}]}]}`,
		`{"services": [{"service": "pay", "handlers": [{"name": "h", "events": ["a.b"]}]},
			{"service": "pay", "handlers": [{"name": "h", "events": ["a.c"]}]}]}`,
		`{"services": [{"service": "pay", "handlers": [{"name": "h", "events": [1]}]}]}`,
		"{\"services\": [{\"service\": \"p\xffy\", \"handlers\": []}]}",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		reg, err := saga.ReadRegistry(newChunkReader(data, chunk))
		whole, wholeErr := saga.ReadRegistry(bytes.NewReader(data))
		if fmt.Sprint(err) != fmt.Sprint(wholeErr) || !reflect.DeepEqual(reg, whole) {
			t.Fatalf("read in chunks of %d: %+v, %v; read whole: %+v, %v", chunk, reg, err, whole, wholeErr)
		}
		var file saga.Registry
		lenient := json.Unmarshal(data, &file) // also fails unless data is one JSON value
		problems := registryProblems(file)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "saga: ") {
				t.Fatalf("error %q does not start with the package name", err)
			}
			if lenient == nil && !slices.ContainsFunc(append(problems, "unknown field"), func(p string) bool { return strings.Contains(err.Error(), p) }) {
				t.Fatalf("error %q names none of the file's problems %q", err, problems)
			}
			return
		}
		if lenient != nil || len(problems) > 0 {
			t.Fatalf("read %+v from a file with problems: %v %q", reg, lenient, problems)
		}
		assertRegistryOf(t, reg, file)
		// What WriteRegistry would write reads back to the same registry.
		b, err := json.MarshalIndent(reg, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		again, err := saga.ReadRegistry(bytes.NewReader(append(b, '\n')))
		if err != nil || !reflect.DeepEqual(again, reg) {
			t.Fatalf("written\n%s\nreads back as %+v, %v; want %+v", b, again, err, reg)
		}
	})
}

// assertRegistryOf checks that reg holds exactly file's services and
// handlers, sorted and merged.
func assertRegistryOf(t *testing.T, reg, file saga.Registry) {
	t.Helper()
	want := map[string]map[string][]string{}
	for _, sh := range file.Services {
		if want[sh.Service] == nil {
			want[sh.Service] = map[string][]string{}
		}
		for _, h := range sh.Handlers {
			want[sh.Service][h.Name] = slices.Sorted(slices.Values(h.Events))
		}
	}
	got := map[string]map[string][]string{}
	for i, sh := range reg.Services {
		if i > 0 && reg.Services[i-1].Service >= sh.Service {
			t.Fatalf("services not sorted and unique: %+v", reg.Services)
		}
		got[sh.Service] = map[string][]string{}
		for j, h := range sh.Handlers {
			if j > 0 && sh.Handlers[j-1].Name >= h.Name {
				t.Fatalf("handlers of %s not sorted and unique: %+v", sh.Service, sh.Handlers)
			}
			got[sh.Service][h.Name] = h.Events
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %+v\nwant the file's %+v", got, want)
	}
}
