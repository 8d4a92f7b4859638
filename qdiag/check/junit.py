"""JUnit XML for CI test reports: one testcase per check; WARNING and CRITICAL
are failures, UNKNOWN an error."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from qdiag.check.evaluate import CRITICAL, UNKNOWN, WARNING, CheckResult


def to_xml(results: list[CheckResult], elapsed_s: float, hostname: str) -> bytes:
    failures = sum(1 for r in results if r.status in (WARNING, CRITICAL))
    errors = sum(1 for r in results if r.status == UNKNOWN)
    suites = ET.Element("testsuites", name="qdiag check", tests=str(len(results)), failures=str(failures),
                        errors=str(errors), time=f"{elapsed_s:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="qdiag check", tests=str(len(results)), failures=str(failures),
                          errors=str(errors), skipped="0", time=f"{elapsed_s:.3f}", hostname=hostname)
    for r in results:
        classname = "qdiag." + r.name.split(" ", 1)[0].split(":", 1)[0]
        case = ET.SubElement(suite, "testcase", classname=classname, name=r.name, time="0")
        if r.status in (WARNING, CRITICAL):
            ET.SubElement(case, "failure", message=r.line(), type=r.status).text = r.line()
        elif r.status == UNKNOWN:
            ET.SubElement(case, "error", message=r.line(), type=r.status).text = r.line()
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"
