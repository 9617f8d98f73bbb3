from django import forms

from .models import ImportJob


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL (one object per line) or CSV with a header row; UTF-8.")
    format = forms.ChoiceField(
        choices=[("", "From the file name")] + ImportJob.Format.choices, required=False
    )
