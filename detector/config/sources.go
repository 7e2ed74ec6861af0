package config

import (
	"fmt"
	"reflect"

	"go.yaml.in/yaml/v3"

	"github.com/pgtripwire/pgtripwire/detector/source"
)

var sourceSetType = reflect.TypeFor[source.Set]()

// sources decodes the sources: section into set, whose settings hold their defaults.
// Each source's section is decoded into its own Settings struct exactly as the rest of
// the file is decoded (strict keys, positions, null keeps the default), through a struct
// type made for the set: one field per source, named by its key.
func (d *decoder) sources(path string, n *yaml.Node, set source.Set) bool {
	all := set.All()
	fields := make([]reflect.StructField, len(all))
	for i, c := range all {
		fields[i] = reflect.StructField{
			Name: fmt.Sprintf("Source%d", i),
			Type: reflect.TypeOf(c.Settings).Elem(),
			Tag:  reflect.StructTag(fmt.Sprintf("yaml:%q", c.Name)),
		}
	}
	section := reflect.New(reflect.StructOf(fields)).Elem()
	for i, c := range all {
		section.Field(i).Set(reflect.ValueOf(c.Settings).Elem())
	}
	ok := d.mapping(path, n, section)
	for i, c := range all {
		reflect.ValueOf(c.Settings).Elem().Set(section.Field(i))
	}
	return ok
}

// sources checks each source's section with its own Check.
func (v *validator) sources() {
	for _, c := range v.cfg.Sources.All() {
		c.Settings.Check(sourceChecker{v: v, path: "sources." + c.Name})
	}
}

// sourceChecker reports a source's problems at the positions of its section's keys.
type sourceChecker struct {
	v    *validator
	path string
}

func (c sourceChecker) Errorf(key, format string, args ...any) {
	c.v.errorf(c.path+"."+key, format, args...)
}
