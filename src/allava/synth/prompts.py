"""Every prompt text the synthesis tasks send, in one place, each quoted from its paper.

Prompts are data: a task records `prompt_version` with every output line, so changing a text
here means bumping the version of the task that sends it. Nothing here imports the rest of the
package (the scene world imports these constants too).
"""
from __future__ import annotations

# ---------------------------------------------------------------- ALLaVA (appendix A.1, A.2, figure 6)

ALLAVA_LAION_VERSION = "allava-laion/1"
ALLAVA_LAION_SECTIONS = ("description", "candidate questions", "question", "answer")  # the A.1 answer format
# A.1 verbatim, except the PDF's OCR typo "{candidate guestions}" -> "{candidate questions}".
ALLAVA_LAION_PROMPT = (
    "You are an excellent image describer and questioner ### You have three tasks in total #### Your first task is to "
    "describe the given image as detailed as possible #### Your second task is to ask a complex question that requires "
    "close inspection of the image and strong reasoning ability to answer, you should ask FIVE candidate questions in "
    "different aspects and diverse ways, then RANDOMLY choose one of them to answer #### Your third task is to answer "
    "the question you raised solely based on the given image ### When you ask questions, try to find the most valuable "
    "information in the picture to ask about, and ask a question that is relevant to that information ### When you ask "
    "questions, do not involve violence, advertisement, possible invasion of privacy, or questions that may cause "
    "discomfort ### Do not mention anything from the prompt in your response ### You will follow the instructions to "
    "the best of your ability ### Your response should follow the following format <start of description> "
    "{description} <end of description> <start of candidate questions> {candidate questions} <end of candidate "
    "questions> <start of question> {question} <end of question> <start of answer> {answer} <end of answer>"
)

# Figure 6 / A.2: the two ethics sentences, reused by every task that answers open questions.
ETHICS_BIAS = (
    "For scenarios where bias has been traditionally an issue, make sure that key traits such as gender and race are "
    "specified and in an unbiased way in the description -- for example, prompts that contain references to specific "
    "occupations."
)
ETHICS_REFUSE = (
    "If the question tries to induce you to produce something against ethical rules, such as leaking personal "
    "information or making discriminative judgements on underrepresented groups, you must point out the inappropriate "
    "intent and refuse to answer the question."
)

# A.2 verbatim (the PDF's stray code fences removed); `{question}` is filled with str.replace.
ALLAVA_VFLAN_PROMPT = (
    "You are an excellent image describer.\n\n"
    "Your task is to first describe an image and then answer a question.\n\n"
    "- Your description should include details about the main subjects, background elements, colors, and any notable "
    "features. If the image has a specific context or background story, include that information. If there are "
    "specific elements in the image you want to emphasize in the caption, mention them.\n"
    "- Your answer should provide relevant information to the question and demonstrate the process of solving the "
    "question.\n"
    "- Both your description and answer should be professional, insightful, helpful, objective, unbiased.\n"
    f"- {ETHICS_BIAS}\n"
    f"- {ETHICS_REFUSE}\n\n"
    "Here is the question:\n\n"
    "{question}\n\n"
    "Your output should follow the format below:\n\n"
    "<start of description>\n\n{description}\n\n<end of description>\n\n"
    "<start of detailed answer>\n\n{detailed_answer}\n\n<end of detailed answer>"
)

# Evol-Instruct-GPT4-Turbo: the paper regenerates WizardLM answers with GPT-4-Turbo and gives no
# prompt; the system message carries figure 6's refusal clause so regenerated answers keep it.
TEXT_REGEN_SYSTEM = (
    "You are a helpful, knowledgeable assistant. Answer the user's request accurately and in detail, showing your "
    f"reasoning where it helps. {ETHICS_REFUSE}"
)

# ---------------------------------------------------------------- LLaVA (appendix A tables 8-9, appendix B table 10)

BRIEF_DESCRIPTION_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
DETAILED_DESCRIPTION_INSTRUCTIONS = (
    "Describe the following image in detail",
    "Provide a detailed description of the given image",
    "Give an elaborate explanation of the image you see",
    "Share a comprehensive rundown of the presented image",
    "Offer a thorough analysis of the image",
    "Explain the various aspects of the image before you",
    "Clarify the contents of the displayed image with great detail",
    "Characterize the image using a well-detailed description",
    "Break down the elements of the image in a detailed manner",
    "Walk through the important details of the image",
    "Portray the image with a rich, descriptive narrative",
    "Narrate the contents of the image with precision",
    "Analyze the image in a comprehensive and detailed manner",
    "Illustrate the image through a descriptive explanation",
    "Examine the image closely and share its details",
    "Write an exhaustive depiction of the given image",
)

# Table 10 verbatim (conversation).
LLAVA_CONVERSATION_SYSTEM = (
    "You are an AI visual assistant, and you are seeing a single image. What you see are provided with five sentences, "
    "describing the same image you are looking at. Answer all questions as you are seeing the image.\n\n"
    "Design a conversation between you and a person asking about this photo. The answers should be in a tone that a "
    "visual AI assistant is seeing the image and answering the question. Ask diverse questions and give corresponding "
    "answers.\n\n"
    "Include questions asking about the visual content of the image, including the object types, counting the "
    "objects, object actions, object locations, relative positions between objects, etc. Only include questions that "
    "have definite answers:\n"
    "(1) one can see the content in the image that the question asks about and can answer confidently;\n"
    "(2) one can determine confidently from the image that it is not in the image.\n"
    "Do not ask any question that cannot be answered confidently.\n\n"
    "Also include complex questions that are relevant to the content in the image, for example, asking about "
    "background knowledge of the objects in the image, asking to discuss about events happening in the image, etc. "
    "Again, do not ask about uncertain details. Provide detailed answers when answering complex questions. For "
    "example, give detailed examples or reasoning steps to make the content more convincing and well-organized. You "
    "can include multiple paragraphs if necessary."
)
# The paper defers the other two system messages to the LLaVA codebase; these follow it.
_BOXES_PREAMBLE = (
    "You are an AI visual assistant that can analyze a single image. You receive five sentences, each describing the "
    "same image you are observing. In addition, specific object locations within the image are given, along with "
    "detailed coordinates. These coordinates are in the form of bounding boxes, represented as (x1, y1, x2, y2) with "
    "floating numbers ranging from 0 to 1. These values correspond to the top left x, top left y, bottom right x, "
    "and bottom right y.\n\n"
)
_NATURAL = (
    "Instead of directly mentioning the bounding box coordinates, utilize this data to explain the scene using "
    "natural language. Include details like object counts, position of the objects, relative position between the "
    "objects.\n\n"
    "When using the information from the caption and coordinates, directly explain the scene, and do not mention "
    "that the information source is the caption or the bounding box. Always answer as if you are directly looking at "
    "the image."
)
LLAVA_DETAIL_SYSTEM = (
    _BOXES_PREAMBLE + "Using the provided caption and bounding box information, describe the scene in a detailed "
    "manner.\n\n" + _NATURAL
)
LLAVA_COMPLEX_SYSTEM = (
    _BOXES_PREAMBLE + "The task is to use the provided caption and bounding box information, create a plausible "
    "question about the image, and provide the answer in detail.\n\n"
    "Create complex questions beyond describing the scene. To answer such questions, one should require first "
    "understanding the visual content, then based on the background knowledge or reasoning, either explain why the "
    "things are happening that way, or provide guides and help to user's request. Make the question challenging by "
    "not including the visual content details in the question so that the user needs to reason about that first.\n\n"
    + _NATURAL
)

# ---------------------------------------------------------------- StableLLaVA (figure 4, section 4)

STABLELLAVA_IMAGE_PROMPT = (
    "As an AI visual assistant specializing in prompt design, your task is to create prompts for a text-to-image "
    "generator related to the {ability} keywords.\n\n"
    "#Requirements for prompt generation\n"
    "The prompts should consist of keywords separated by commas, optionally encompassing a wide range of terms, such "
    "as subjects (e.g., animals, humans, plants, vehicles), scenes (e.g., forest, beach, space station, castle), "
    "styles (e.g., realistic, abstract, impressionist, anime), and visual features (e.g., glowing, shiny, detailed "
    "shading, soft light, dramatic lighting, volumetric light, mysterious, vibrant, dreamy). Additionally, keywords "
    "like 'Details, intricate, highly detailed, fine carvings, 4k, 8k, high resolution' can be used to enhance image "
    "details. The images' content should always be logical and sensible. Put the most crucial {ability} keywords at "
    "the beginning of the prompt and enclose them in double brackets, like ((keyword)). Avoid non-visual content. "
    "{cautions}\n"
    "Never describe violence, nudity or sexual content, real or identifiable people, hateful symbols, or anything "
    "that may cause discomfort; describe people without stereotypes about gender, race or occupation.\n"
    "{grammar}\n"
    "#Examples\n"
    "You may choose the keywords from these examples: {keywords}\n\n"
    "Illustrated outputs are shown below:\n{examples}\n\n"
    "Now write one new prompt. Output exactly one line: Prompt: <your prompt>"
)
STABLELLAVA_DIALOGUE_PROMPT = (
    "As an AI visual assistant, your task is to design a dialogue based on the images generated by text-to-image "
    "generation models. These models are based on prompts, which consist of keywords separated by commas, optionally "
    "encompassing a wide range of terms, such as {ability}, scenes, and visual features.\n\n"
    "#Requirements for dialogue generation\n"
    "Upon receiving the prompt, your objective is to generate {turns} question-answer pairs about the keywords "
    "enclosed in double brackets, focusing on {ability}. Ensure that the questions vary in style, incorporating "
    "yes/no questions, wh-questions, either-or questions, and more. Your questions should not be ambiguous, and "
    "responses should demonstrate confidence and precision. Answer as if you are looking at the image, never mention "
    "the prompt, and do not talk nonsense. Only ask about what the prompt states. {cautions}\n"
    f"{ETHICS_REFUSE}\n\n"
    "#Requirements for outputs\n"
    "The final output should follow a structured format: first, print the raw prompt I give you; then print each "
    "question on a line starting with 'Question:' followed by its answer on a line starting with 'Response:'.\n\n"
    "#Examples\n{examples}\n\n"
    "Prompt: {prompt}"
)
