"""Training data for LLaVA-ViT-Split: LLaVA records, templates with exact label masks, dataset, sampler, collators."""

from llava_vitsplit.data.collator import SupervisedCollator
from llava_vitsplit.data.dataset import LazySupervisedDataset, count_image_tokens
from llava_vitsplit.data.encoding import IGNORE_INDEX, Encoded, encode
from llava_vitsplit.data.images import load_image
from llava_vitsplit.data.packing import PackingCollator, first_fit_rows, packing_layout
from llava_vitsplit.data.records import IMAGE_TAG, DataProblem, Sample, Turn, load_records, parse_record
from llava_vitsplit.data.sampler import ModalityLengthGroupedSampler, modality_length_grouped_indices
from llava_vitsplit.data.templates import Rendered, get_template, template_names

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TAG",
    "DataProblem",
    "Encoded",
    "LazySupervisedDataset",
    "ModalityLengthGroupedSampler",
    "PackingCollator",
    "Rendered",
    "Sample",
    "SupervisedCollator",
    "Turn",
    "count_image_tokens",
    "encode",
    "first_fit_rows",
    "get_template",
    "load_image",
    "load_records",
    "modality_length_grouped_indices",
    "packing_layout",
    "parse_record",
    "template_names",
]
