"""Validates OCSF events, one JSON object a line, against a pinned OCSF
schema version. Used by tests/ocsf.rs.

    check.py VERSION EVENTS.jsonl

The schema is the OCSF server's own export of VERSION (the file
schema.ocsf.io serves at /VERSION/export/schema), as the PyPI package
ocsf-json-schema ships it. Each event is checked twice:

1. With the OCSF project's ocsf-lib, which reads that export into its
   schema model: the class exists (by class_uid); every attribute, at every
   depth, is one the class or object defines (what is under `unmapped` is
   free); none is deprecated; every enum attribute holds one of its values,
   and its sibling string (activity_name, severity, status, …) is that
   value's caption; type_uid is class_uid * 100 + activity_id;
   metadata.version is VERSION.
2. With the JSON Schema (draft 2020-12) ocsf-json-schema generates for the
   class from the same export, checked by jsonschema: required attributes,
   types, patterns (ip_t, …), the schema's constraints (at_least_one,
   just_one), no unknown attributes.

Prints one JSON object: {"events": N, "valid": N, "invalid": [{"line": L,
"class_uid": C, "errors": [...]}]}; exits 0 when every event is valid,
1 otherwise.
"""

import json
import os
import sys

import jsonschema
import ocsf_json_schema
from ocsf.schema import from_file
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema


def model_errors(schema, version, event):
    errors = []
    classes = {c.uid: c for c in schema.classes.values()}
    cls = classes.get(event.get("class_uid"))
    if cls is None:
        return [f"class_uid {event.get('class_uid')!r} is not an OCSF {version} class"]
    if event.get("metadata", {}).get("version") != version:
        errors.append(f"metadata.version is not {version}")
    if event.get("type_uid") != cls.uid * 100 + event.get("activity_id", -1):
        errors.append("type_uid is not class_uid * 100 + activity_id")
    walk(schema, cls.attributes, event, cls.name, errors)
    return errors


def walk(schema, attributes, value, path, errors):
    for key, item in value.items():
        where = f"{path}.{key}"
        attr = attributes.get(key)
        if attr is None:
            errors.append(f"{where} is not an attribute of {path}")
            continue
        if attr.deprecated is not None:
            errors.append(f"{where} is deprecated: {attr.deprecated.message}")
        if key == "unmapped":
            continue
        items = item if attr.is_array and isinstance(item, list) else [item]
        for one in items:
            if attr.enum is not None and str(one) not in attr.enum:
                errors.append(f"{where} = {one!r} is not one of {sorted(attr.enum)}")
            elif attr.enum is not None and attr.sibling and attr.sibling in value:
                caption = attr.enum[str(one)].caption
                if value[attr.sibling] != caption:
                    errors.append(
                        f"{path}.{attr.sibling} = {value[attr.sibling]!r}, "
                        f"not {caption!r} (the caption of {key} {one})"
                    )
            if attr.object_type is not None:
                if not isinstance(one, dict):
                    errors.append(f"{where} is not an object")
                    continue
                obj = schema.objects.get(attr.object_type)
                if obj is None:
                    errors.append(f"{where}: no object {attr.object_type}")
                    continue
                walk(schema, obj.attributes, one, f"{path}.{key}", errors)


def main():
    version, events_path = sys.argv[1], sys.argv[2]
    export = os.path.join(os.path.dirname(ocsf_json_schema.__file__), "ocsf", f"{version}.json")
    schema = from_file(export)
    json_schemas = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
    validators = {}
    report = {"events": 0, "valid": 0, "invalid": []}
    with open(events_path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            event = json.loads(line)
            report["events"] += 1
            errors = model_errors(schema, version, event)
            class_uid = event.get("class_uid")
            try:
                name = json_schemas.lookup_class_name_from_uid(class_uid)
            except (ValueError, TypeError):
                name = None
            if name is not None:
                if name not in validators:
                    validators[name] = jsonschema.Draft202012Validator(
                        json_schemas.get_class_schema(name, profiles=[])
                    )
                for e in validators[name].iter_errors(event):
                    errors.append(f"json schema: {'/'.join(map(str, e.absolute_path))}: {e.message[:300]}")
            if errors:
                report["invalid"].append({"line": number, "class_uid": class_uid, "errors": errors})
            else:
                report["valid"] += 1
    json.dump(report, sys.stdout)
    print()
    sys.exit(0 if not report["invalid"] else 1)


if __name__ == "__main__":
    main()
