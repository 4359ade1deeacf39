"""Job descriptions: field-named validation errors, the Param schema, psij round trips and JSDL input."""

from __future__ import annotations

import json
from datetime import timedelta

import jsonschema
import pytest
from psij import JobSpec, ResourceSpecV1
from psij.serialize import JSONSerializer

from rackflow.core.jobspec import (
    MAX_ARGUMENTS,
    MAX_COUNT,
    MAX_ENVIRONMENT,
    MAX_TEXT,
    JobDescription,
    JobDescriptionError,
    Location,
    from_jsdl,
    parse_job_description,
)
from rackflow.core.values import MAX_DURATION, parse_duration

JSDL = """<?xml version="1.0" encoding="UTF-8"?>
<jsdl:JobDefinition xmlns:jsdl="http://schemas.ggf.org/jsdl/2005/11/jsdl"
                    xmlns:jsdl-hpcpa="http://schemas.ggf.org/jsdl/2006/07/jsdl-hpcpa">
  <jsdl:JobDescription>
    <jsdl:JobIdentification><jsdl:JobName>blast-run</jsdl:JobName></jsdl:JobIdentification>
    <jsdl:Application>
      <jsdl:ApplicationName>blastall</jsdl:ApplicationName>
      <jsdl-hpcpa:HPCProfileApplication>
        <jsdl-hpcpa:Executable>/usr/local/bin/blastall</jsdl-hpcpa:Executable>
        <jsdl-hpcpa:Argument>-p</jsdl-hpcpa:Argument>
        <jsdl-hpcpa:Argument>blastn</jsdl-hpcpa:Argument>
        <jsdl-hpcpa:Argument>-i</jsdl-hpcpa:Argument>
        <jsdl-hpcpa:Argument>query seq.fasta</jsdl-hpcpa:Argument>
        <jsdl-hpcpa:Input>/dev/null</jsdl-hpcpa:Input>
        <jsdl-hpcpa:Output>blast.out</jsdl-hpcpa:Output>
        <jsdl-hpcpa:Error>blast.err</jsdl-hpcpa:Error>
        <jsdl-hpcpa:WorkingDirectory>work</jsdl-hpcpa:WorkingDirectory>
        <jsdl-hpcpa:Environment name="BLASTDB">/data/blastdb</jsdl-hpcpa:Environment>
        <jsdl-hpcpa:Environment name="OMP_NUM_THREADS">4</jsdl-hpcpa:Environment>
      </jsdl-hpcpa:HPCProfileApplication>
    </jsdl:Application>
    <jsdl:Resources>
      <jsdl:TotalCPUCount><jsdl:Exact>8</jsdl:Exact></jsdl:TotalCPUCount>
      <jsdl:TotalResourceCount><jsdl:Exact>2</jsdl:Exact></jsdl:TotalResourceCount>
    </jsdl:Resources>
    <jsdl:DataStaging>
      <jsdl:FileName>query seq.fasta</jsdl:FileName>
      <jsdl:CreationFlag>overwrite</jsdl:CreationFlag>
      <jsdl:Source><jsdl:URI>s3://inputs/run-7/query.fasta</jsdl:URI></jsdl:Source>
    </jsdl:DataStaging>
    <jsdl:DataStaging>
      <jsdl:FileName>blast.out</jsdl:FileName>
      <jsdl:CreationFlag>overwrite</jsdl:CreationFlag>
      <jsdl:Target><jsdl:URI>sftp://archive_ssh/results/run-7/blast.out</jsdl:URI></jsdl:Target>
    </jsdl:DataStaging>
  </jsdl:JobDescription>
</jsdl:JobDefinition>
"""


def problems_of(data: object) -> str:
    with pytest.raises(JobDescriptionError) as info:
        parse_job_description(data)  # type: ignore[arg-type]
    return str(info.value)


def test_errors_name_the_field() -> None:
    assert "executable: Input should be a valid string" in problems_of({"executable": 5})
    assert "executable: Field required" in problems_of({})
    msg = problems_of(
        {
            "executable": "x",
            "bogus": 1,
            "resources": {"node_count": 0},
            "environment": {"BAD NAME": "v"},
            "stage_in": [{"source": "ftp://h/x", "target": "x"}],
        }
    )
    assert "bogus: unknown field" in msg
    assert "resources.node_count: Input should be greater than or equal to 1" in msg
    assert "environment.BAD NAME" in msg
    assert "stage_in[0].source: unsupported URI scheme 'ftp'" in msg


def test_cross_field_rules() -> None:
    assert "process_count (3) must equal" in problems_of(
        {"executable": "x", "resources": {"node_count": 2, "processes_per_node": 2, "process_count": 3}}
    )
    assert "stage_in[0].target: must be a local path" in problems_of(
        {"executable": "x", "stage_in": [{"source": "s3://b/k", "target": "s3://b/k2"}]}
    )
    assert "not valid JSON" in problems_of("{nope")


def test_directive_bound_text_cannot_smuggle_lines() -> None:
    msg = problems_of({"executable": "x", "attributes": {"queue_name": "q\n#SBATCH --uid=0"}})
    assert "attributes.queue_name" in msg


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90),
        ("90", 90),
        ("01:30:00", 5400),
        ("1-00:00:01", 86401),
        ("PT1H30M", 5400),
        ("600.0 s", 600),
        ("2h", 7200),
    ],
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    job = parse_job_description({"executable": "x", "attributes": {"duration": text}})
    assert job.to_dict()["attributes"]["duration"] == seconds


def test_param_schema_is_self_contained_and_agrees_with_the_model() -> None:
    schema = JobDescription.param_schema()
    assert "$ref" not in json.dumps(schema) and "$defs" not in schema
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    jsonschema.Draft7Validator.check_schema(schema)
    good = {
        "executable": "/bin/echo",
        "arguments": ["hi"],
        "environment": {"A": "b"},
        "resources": {"__version": 1, "node_count": 1},
        "attributes": {"duration": "01:00:00", "custom_attributes": {"slurm.qos": "debug"}},
        "stage_in": [{"source": "s3://b/k", "target": "in.dat"}],
    }
    jsonschema.validate(good, schema)
    job = parse_job_description(good)
    jsonschema.validate(job.to_dict(), schema)  # what we write, the schema accepts
    assert parse_job_description(job.to_dict()) == job
    for bad in (
        {"executable": 5},
        {"executable": "x", "bogus": 1},
        {"executable": "x", "environment": {"BAD NAME": "v"}},
        {"executable": "x", "attributes": {"duration": "soon"}},
        {"executable": "x", "resources": {"node_count": 0}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(JobDescriptionError):
            parse_job_description(bad)


def test_psij_round_trip_and_psij_json_is_accepted() -> None:
    job = parse_job_description(
        {
            "executable": "/bin/app",
            "arguments": ["a b"],
            "directory": "/scratch/x",
            "environment": {"K": "v"},
            "resources": {"node_count": 2, "processes_per_node": 4, "memory": 1 << 30},
            "attributes": {"duration": 3600, "queue_name": "batch", "account": "p1"},
        }
    )
    spec = job.to_psij()
    assert isinstance(spec, JobSpec)
    assert isinstance(spec.resources, ResourceSpecV1)
    assert spec.resources.computed_process_count == 8 and spec.attributes.duration == timedelta(hours=1)
    assert JobDescription.from_psij(spec) == job
    # psij's own serialisation ("3600.0 s" durations, "__version") reads back into the same job
    psij_json = JSONSerializer().dumps(spec)
    assert parse_job_description(psij_json).resources == job.resources
    assert parse_job_description(job.to_psij_json()).attributes.duration == timedelta(hours=1)
    assert JobDescription.from_psij(JobSpec(executable="/bin/true", resources=ResourceSpecV1())).executable


def test_jsdl_hpc_profile_application_maps_to_a_job_description() -> None:
    job = from_jsdl(JSDL)
    assert job.executable == "/usr/local/bin/blastall"
    assert job.arguments == ["-p", "blastn", "-i", "query seq.fasta"]
    assert (job.stdin_path, job.stdout_path, job.stderr_path) == ("/dev/null", "blast.out", "blast.err")
    assert job.directory == "work" and job.name == "blast-run"
    assert job.environment == {"BLASTDB": "/data/blastdb", "OMP_NUM_THREADS": "4"}
    assert job.resources is not None
    assert (job.resources.process_count, job.resources.node_count) == (8, 2)
    assert job.resources.computed_processes_per_node == 4
    assert [(s.source, s.target) for s in job.stage_in] == [
        ("s3://inputs/run-7/query.fasta", "query seq.fasta")
    ]
    assert [(s.source, s.target) for s in job.stage_out] == [
        ("blast.out", "sftp://archive_ssh/results/run-7/blast.out")
    ]
    assert parse_job_description(JSDL) == job  # XML text is recognised by parse_job_description


def test_jsdl_errors_are_readable() -> None:
    with pytest.raises(JobDescriptionError, match="not well-formed XML"):
        from_jsdl("<jsdl:JobDefinition")
    with pytest.raises(JobDescriptionError, match="root must be"):
        from_jsdl("<JobDefinition/>")
    no_app = JSDL.replace("HPCProfileApplication", "OtherApplication")
    with pytest.raises(JobDescriptionError, match="HPCProfileApplication"):
        from_jsdl(no_app)
    no_exe = JSDL.replace("<jsdl-hpcpa:Executable>/usr/local/bin/blastall</jsdl-hpcpa:Executable>", "")
    with pytest.raises(JobDescriptionError, match="executable"):
        from_jsdl(no_exe)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (float("inf"), "finite"),
        (float("nan"), "finite"),
        (1e400, "finite"),
        (-1, "positive"),
        (10**12, "at most 365 days"),
        ("9" * 30, "at most 365 days"),
        ("9" * 30 + ":00:00", "at most 365 days"),
        ("9" * 30 + "d", "at most 365 days"),
        ("P" + "9" * 30 + "D", "at most 365 days"),
        ("1" * 100, "longer than 64"),
    ],
)
def test_durations_are_finite_positive_and_at_most_a_year(value: object, why: str) -> None:
    msg = problems_of({"executable": "x", "attributes": {"duration": value}})
    assert "attributes.duration" in msg and why in msg
    assert parse_duration("365d") == MAX_DURATION


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"resources": {"process_count": 2**64}}, "resources.process_count"),
        ({"resources": {"node_count": MAX_COUNT + 1}}, "resources.node_count"),
        ({"resources": {"cpu_cores_per_process": 2**63}}, "resources.cpu_cores_per_process"),
        ({"resources": {"memory": 2**64}}, "resources.memory"),
        ({"arguments": ["a" * (MAX_TEXT + 1)]}, "arguments[0]"),
        ({"arguments": ["a"] * (MAX_ARGUMENTS + 1)}, "arguments"),
        ({"environment": {"A" * 200: "1"}}, "environment"),
        ({"environment": {f"V{i}": "1" for i in range(MAX_ENVIRONMENT + 1)}}, "environment"),
        ({"attributes": {"queue_name": "q" * 300}}, "attributes.queue_name"),
        ({"attributes": {"custom_attributes": {"slurm.x": 2**64}}}, "attributes.custom_attributes.slurm.x"),
        ({"attributes": {"custom_attributes": {"slurm.x": float("inf")}}}, "attributes.custom_attributes"),
        ({"stage_in": [{"source": "s3://b/k", "target": "t"}] * 300}, "stage_in"),
        ({"executable": "x" * (MAX_TEXT + 1)}, "executable"),
    ],
)
def test_counts_strings_and_lists_are_bounded(job: dict[str, object], field: str) -> None:
    assert field in problems_of({"executable": "x", **job})


@pytest.mark.parametrize("count", [str(2**64), "1e400", "-1e400", "NaN", "inf"])
def test_jsdl_counts_beyond_64_bits_or_not_finite_are_refused(count: str) -> None:
    document = JSDL.replace("<jsdl:Exact>8</jsdl:Exact>", f"<jsdl:Exact>{count}</jsdl:Exact>")
    with pytest.raises(JobDescriptionError, match="TotalCPUCount"):
        from_jsdl(document)


def test_jsdl_with_a_dtd_entity_bomb_or_external_entity_is_refused_by_defusedxml() -> None:
    body = JSDL.split("\n", 1)[1]
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n' + body
    external = '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n' + body.replace(
        "/usr/local/bin/blastall", "&e;"
    )
    for document in (bomb, external):
        with pytest.raises(JobDescriptionError, match="DTDs and entities are not accepted"):
            from_jsdl(document)


def test_locations_split_uris_for_the_caller() -> None:
    assert Location.parse("s3://bucket/a/b.dat").model_dump(exclude={"uri"}) == {
        "kind": "s3",
        "host": "bucket",
        "path": "a/b.dat",
    }
    sftp = Location.parse("sftp://cluster_ssh/home/u/x")
    assert (sftp.kind, sftp.host, sftp.path) == ("sftp", "cluster_ssh", "/home/u/x")
    assert Location.parse("in.dat").resolve_local("/jobs/1") == "/jobs/1/in.dat"
    assert Location.parse("/abs/in.dat").resolve_local("/jobs/1") == "/abs/in.dat"
    with pytest.raises(ValueError, match="names no key"):
        Location.parse("s3://bucket/")


@pytest.mark.parametrize(
    ("key", "option"),
    [
        ("slurm.job-name", "job-name"),
        ("slurm.output", "output"),
        ("slurm.chdir", "chdir"),
        ("slurm.export", "export"),
        ("slurm.exp", "export"),  # sbatch takes unambiguous abbreviations of long options
        ("slurm.uid", "uid"),
        ("slurm.gid", "gid"),
        ("slurm.comment", "comment"),
        ("slurm.J", "J"),
        ("pbs.N", "N"),
        ("pbs.V", "V"),
        ("pbs.v", "v"),
        ("pbs.u", "u"),
        ("lsf.env", "env"),
        ("lsf.cwd", "cwd"),
        ("lsf.oo", "oo"),
        ("sge.wd", "wd"),
        ("sge.V", "V"),
        ("sge.o", "o"),
    ],
)
def test_custom_attributes_cannot_set_options_rackflow_manages(key: str, option: str) -> None:
    with pytest.raises(JobDescriptionError) as err:
        parse_job_description({"executable": "/bin/true", "attributes": {"custom_attributes": {key: "x"}}})
    assert err.value.problems[0].startswith("attributes.custom_attributes")
    assert repr(key) in err.value.problems[0] and repr(option) in err.value.problems[0]


def test_custom_attributes_for_other_options_stay_allowed() -> None:
    job = parse_job_description(
        {
            "executable": "/bin/true",
            "attributes": {
                "custom_attributes": {"slurm.qos": "debug", "pbs.W": "umask=022", "sge.pe_name": "mpi"}
            },
        }
    )
    assert job.attributes.custom_for("slurm") == {"qos": "debug"}
