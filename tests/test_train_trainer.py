"""AllavaTrainer's shortcuts around the plain Trainer that must not change what it reports."""
from __future__ import annotations

from transformers import Trainer, TrainingArguments

from allava.data.dataset import Collator, ConversationDataset, DataSource
from allava.data.tokenize import ConversationEncoder
from allava.model.build import ModelSpec, build_model
from allava.train.trainer import AllavaTrainer, set_trainable


def test_floating_point_ops_are_the_trainers_with_the_parameter_count_taken_once(backbones, tiny_data, tmp_path):
    """transformers.Trainer.floating_point_ops: 6 x input tokens x non-embedding parameters."""
    model, processor = build_model(ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"],
                                             template="human_assistant"))
    set_trainable(model, ["projector", "language_model"])
    enc = ConversationEncoder(processor.tokenizer, "human_assistant", "<image>", model.config.image_seq_length, 512)
    ds = ConversationDataset([DataSource(tiny_data["vqa"], tiny_data["images"]), DataSource(tiny_data["text"])], enc,
                             processor.image_processor)
    collate = Collator(processor.tokenizer.pad_token_id, 8)
    args = TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to=[])
    ours = AllavaTrainer(model=model, args=args, data_collator=collate)
    plain = Trainer(model=model, args=args, data_collator=collate)
    calls = []
    count = model.num_parameters
    model.num_parameters = lambda **kw: calls.append(kw) or count(**kw)
    for idx in ([0, 1, 2], [30, 31], [3, 40, 41, 42]):
        batch = collate([ds[i] for i in idx])
        assert ours.floating_point_ops(batch) == plain.floating_point_ops(batch) > 0
    assert len(calls) == 1 + 3  # once for ours, every call for the plain Trainer
    assert ours.floating_point_ops({"pixel_values": None}) == 0  # no input ids: the Trainer's answer
    ours.hooks.remove()
