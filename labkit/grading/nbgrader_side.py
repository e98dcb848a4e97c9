"""nbgrader beside labkit: what nbgrader's own commands need to take labkit's notebooks as they are.

labkit keeps a written question's rubric in the answer cell's metadata (metadata.labkit,
labkit/grading/written.py); nbgrader's generate_assignment removes the model answer but
knows nothing of that metadata, so it would hand the rubric to the students. Its
pipeline, with `ClearRubrics` added, does not. docs/nbgrader_config.py uses it.
"""

from nbconvert.preprocessors import Preprocessor
from nbgrader.preprocessors import (CheckCellMetadata, ClearHiddenTests, ClearMarkScheme, ClearOutput,
                                    ClearSolutions, ComputeChecksums, IncludeHeaderFooter, InstantiateTests,
                                    LockCells, SaveCells)
from traitlets import Bool


class ClearRubrics(Preprocessor):
    """Remove labkit's rubric (cell metadata `labkit`) from every cell of a notebook."""

    enabled = Bool(True)  # nbconvert's preprocessors are off unless enabled; this one always runs

    def preprocess_cell(self, cell, resources, index):
        cell.metadata.pop("labkit", None)
        return cell, resources


def generate_assignment_preprocessors():
    """nbgrader 0.9's generate_assignment pipeline (nbgrader/converters/generate_assignment.py), then ClearRubrics."""
    return [IncludeHeaderFooter, InstantiateTests, LockCells, ClearSolutions, ClearOutput, CheckCellMetadata,
            ComputeChecksums, SaveCells, ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata,
            ClearRubrics]
